"""The README: every setting documented, and its two commands working on a fresh clone.

The fresh-clone walk is marked `slow`; the README's test command (`make test`) runs slow tests
too, so CI walks it on every run. `make test-fast` skips it during development.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ganscope.server.settings import Settings
from tests.harness import REPO, base_env, free_port, wait_for

README = REPO / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def readme_command(which: str) -> str:
    """The command in the code block that follows `<!-- readme-command: which -->`."""
    m = re.search(rf"<!-- readme-command: {which} -->\s*```\w*\n(.+?)\n```", README.read_text(), re.S)
    assert m, f"README has no command marked {which!r}"
    return m.group(1).strip()


def test_settings_table_documents_every_setting() -> None:
    server_part, _, client_part = _section("Settings").partition("### Client side")
    rows = [line for line in server_part.splitlines() if line.startswith("| `GANSCOPE_")]
    # The client side's own table: every variable the CLI, workers and the SDK read.
    client = {re.match(r"\| `(GANSCOPE_\w+)`", r).group(1) for r in client_part.splitlines() if r.startswith("| `GANSCOPE_")}
    assert {"GANSCOPE_SERVER", "GANSCOPE_TOKEN", "GANSCOPE_SPOOL"} <= client
    documented = {re.match(r"\| `(GANSCOPE_\w+)`", row).group(1) for row in rows}
    expected = {f"GANSCOPE_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), f"settings missing from the README table: {expected - documented}"
    assert documented - expected == set(), f"README documents settings that do not exist: {documented - expected}"
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 3 and all(cells), f"incomplete row: {row}"
    # The defaults quoted are the real ones.
    for name, field in Settings.model_fields.items():
        row = next(r for r in rows if r.startswith(f"| `GANSCOPE_{name.upper()}`"))
        default = field.default
        if isinstance(default, float):
            assert f"`{default:g}`" in row, f"{name}: README default differs from {default}"
        elif isinstance(default, int) and not isinstance(default, bool):
            assert f"`{default}`" in row, f"{name}: README default differs from {default}"
        elif isinstance(default, str):
            assert f"`{default}`" in row, f"{name}: README default differs from {default!r}"


def test_two_commands_are_wired_to_make_and_ci() -> None:
    product, tests = readme_command("product"), readme_command("tests")
    assert (product, tests) == ("make up", "make test")
    targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M)
    assert {"up", "test"} <= set(targets)
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci
    lines = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[-1] == tests, "CI must end by running the README's test command, verbatim"
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def test_readme_points_at_real_things() -> None:
    text = README.read_text()
    image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", text).group(1)
    assert (REPO / image).is_file(), f"README screenshot {image} is missing"
    for path in ("Dockerfile", "docker-compose.yml", ".ci/run", "Makefile"):
        assert path in text and (REPO / path).exists()


def _curl_examples() -> list[str]:
    """The curl commands of the README's REST section, continuation lines joined."""
    block = re.search(r"```sh\n(.+?)```", _section("REST API"), re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [ln.strip() for ln in joined.splitlines() if ln.strip().startswith("curl ")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_readme_curl_examples_work(home: Path) -> None:
    from tests.harness import start_server

    token = "readme-token"
    server = start_server(home, token=token)
    try:
        examples = _curl_examples()
        assert any("POST" in c and "/api/jobs" in c for c in examples) and any("/api/runs/1" in c for c in examples)
        env = {**os.environ, "GANSCOPE_TOKEN": token}
        for command in examples:
            command = command.replace("http://127.0.0.1:8000", server.url)
            # --fail-with-body: a 4xx/5xx answer fails the example; a stream is cut after a moment.
            command = command.replace("curl ", "curl --fail-with-body --max-time 3 " if " -sN " in command
                                      else "curl --fail-with-body ", 1)
            out = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
            if "/stream" in command:
                assert out.returncode == 28 and ("event:" in out.stdout or "retry:" in out.stdout), out
                continue
            assert out.returncode == 0, f"README example failed: {command}\n{out.stdout}{out.stderr}"
        run = httpx.get(server.url + "/api/runs/1").json()
        assert run["name"] == "dcgan shapes" and run["status"] == "cancelled"
    finally:
        server.stop()


def _fresh_clone(dest: Path) -> Path:
    """`git clone` of the repository, with the working tree's uncommitted changes laid over it, so the
    walk tests what is about to be committed (in CI the tree is clean and the overlay is empty)."""
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True, timeout=120)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src, dst = REPO / rel, dest / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.exists() and not src.exists():
            dst.unlink()  # deleted in the working tree, not yet in a commit
    return dest


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_readme_commands_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = _fresh_clone(tmp_path / "ganscope")
    # Reuse the environment this suite runs in: the install itself is what .ci/run exercises on a clean
    # machine. Fresh stamps tell make the installs are done.
    (clone / "build" / ".make").mkdir(parents=True)
    for stamp in ("trainer", "dev"):
        (clone / "build" / ".make" / stamp).touch()
    port = free_port()
    env = base_env(clone / "ganscope-data", GANSCOPE_PORT=str(port))
    env.pop("GANSCOPE_HOME")  # the README's default: ./ganscope-data in the clone
    env["PYTHONPATH"] = ""  # nothing from the main checkout: the clone's code runs from its own folder

    # 1. The product command, as a terminal would run it: its own process group, Ctrl-C to end.
    up = subprocess.Popen(readme_command("product").split(), cwd=clone, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any(line.startswith("Press Ctrl-C") for line in out):
            line = up.stdout.readline()
            if not line:
                break
            out.append(line.rstrip())
        url = f"http://127.0.0.1:{port}"
        assert f"ganscope is up: {url}" in out, "\n".join(out)
        pids = [int(p) for p in re.findall(r"pid (\d+)", "\n".join(out))]
        assert len(pids) == 3  # server, worker and the demo worker (the two demo runs train side by side)
        # The processes serving are the clone's, in the clone's data folder.
        for pid in pids:
            assert Path(f"/proc/{pid}/cwd").resolve() == clone.resolve()
        assert (clone / "ganscope-data" / "ganscope.db").exists()
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200 and "ganscope" in page.text.lower()
        runs = httpx.get(url + "/api/runs", timeout=10).json()["runs"]
        assert [r["dataset"] for r in runs] == ["shapes", "shapes"]
        assert all(r["status"] in ("queued", "running") for r in runs)
        assert runs[0]["name"] in page.text or httpx.get(f"{url}/runs/{runs[0]['id']}").status_code == 200
    finally:
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        rest = up.communicate(timeout=150)[0]
    assert "stopped." in rest, "\n".join(out) + rest
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), timeout=30, what="server and worker to exit")
    assert not _group_alive(up.pid)

    # 2. The test command, limited to a quick subset (the whole suite here would walk this test again).
    quick = "-k 'test_packaging or test_settings_table or test_help_on_every_command' -p no:cacheprovider"
    tests = subprocess.run([*readme_command("tests").split(), f"PYTEST_ARGS={quick}"], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    # pytest's closing line; under an outer `make` (as in CI) make's "Leaving directory" may follow it.
    closing = [line for line in tests.stdout.splitlines() if re.search(r"\d+ passed", line)]
    summary = closing[-1] if closing else tests.stdout[-2000:]
    m = re.search(r"(\d+) passed", summary)
    assert m and int(m.group(1)) >= 6 and "failed" not in summary, summary
    assert str(clone) in tests.stdout  # pytest's rootdir: the clone's tests ran, not the main checkout's
