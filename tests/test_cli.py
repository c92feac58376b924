"""The `ganscope` command, run as a real process against a real server (and a real worker where it trains)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import REPO, ServerProc, base_env, free_port, start_server, wait_for

TOKEN = "cli-test-token"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_TOY = {"dataset": "ring8", "steps": 40, "batch_size": 32, "toy_hidden": 16, "toy_layers": 1,
            "sample_every": 20, "checkpoint_every": 20, "toy_every": 20, "flush_every": 10, "device": "cpu"}


def cli(home: Path, *args: str, server: str | None = None, timeout: float = 120,
        **env: str) -> subprocess.CompletedProcess:
    extra = {"GANSCOPE_SERVER": server, **env}
    return subprocess.run([sys.executable, "-m", "ganscope", *args], cwd=home, env=base_env(home, **extra),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A server plus one worker started through `ganscope worker` (the command under test)."""
    home = tmp_path_factory.mktemp("live")
    server = start_server(home)
    log = open(home / "worker.log", "ab")
    worker = subprocess.Popen([sys.executable, "-m", "ganscope", "worker", "--server", server.url, "--device", "cpu",
                               "--poll", "0.2"], cwd=REPO, env=base_env(home), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    yield server
    worker.terminate()
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        worker.kill()
    server.stop()


def test_help_on_every_command(home: Path) -> None:
    expect = {"": ["up", "serve", "worker", "launch", "runs", "export", "latent"],
              "up": ["--home", "--port", "--device"], "serve": ["--host", "--port", "--home"],
              "worker": ["--server", "--device", "--token"], "launch": ["--set", "--no-follow", "--token"],
              "runs": ["--server", "--json"], "export": ["--format", "--output"], "latent": ["--out", "--dims"]}
    for command, words in expect.items():
        out = cli(home, *([command] if command else []), "--help")
        assert out.returncode == 0, out.stderr
        for word in words:
            assert word in out.stdout, f"`ganscope {command} --help` does not mention {word}:\n{out.stdout}"


def test_worker_help_is_the_same_style_as_the_other_commands(home: Path) -> None:
    out = cli(home, "worker", "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage: ganscope worker [OPTIONS]" in out.stdout  # Typer's, like every other command
    for word in ("--poll", "--workdir", "--data-root", "--once", "--max-jobs", "GANSCOPE_TOKEN"):
        assert word in out.stdout, word


def test_port_check_matches_what_uvicorn_can_bind() -> None:
    import socket

    from ganscope.up import port_free

    # A connection closed by the server side first leaves the port in TIME_WAIT: uvicorn (SO_REUSEADDR)
    # binds it at once, so `up` must not refuse it.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server side closes first: its end goes to TIME_WAIT
    client.close()
    assert not port_free("127.0.0.1", port)  # still listening
    listener.close()
    plain = socket.socket()
    try:
        plain.bind(("127.0.0.1", port))
        plain.close()
        pytest.skip("this kernel kept no TIME_WAIT socket to test against")
    except OSError:
        plain.close()  # a bind without SO_REUSEADDR fails: the old check refused this port
    assert port_free("127.0.0.1", port)


def test_unreachable_server_is_one_clear_line(home: Path) -> None:
    out = cli(home, "runs", server=f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert "cannot reach the ganscope server" in out.stderr and "Traceback" not in out.stderr


def test_launch_from_a_file_with_overrides(server: ServerProc, home: Path) -> None:
    (home / "job.yaml").write_text("name: from yaml\ndataset: ring8\nsteps: 40\nlr_d: 1.0e-3\nbatch_size: 32\n")
    out = cli(home, "launch", "job.yaml", "--set", "steps=50", "--set", "lr_g=2e-4", "--set", "amp=true",
              "--set", "name=123", "--no-follow", server=server.url)
    assert out.returncode == 0, out.stderr
    run_id = int(out.stdout.split("queued run ")[1].split(":")[0])
    cfg = httpx.get(f"{server.url}/api/runs/{run_id}").json()["config"]
    assert (cfg["name"], cfg["dataset"], cfg["steps"], cfg["lr_d"], cfg["lr_g"], cfg["amp"], cfg["batch_size"]) == \
        ("123", "ring8", 50, 1e-3, 2e-4, True, 32)
    (home / "job.json").write_text(json.dumps({"dataset": "grid25", "steps": 7}))
    out = cli(home, "launch", "job.json", "--no-follow", server=server.url)
    assert out.returncode == 0, out.stderr
    run_id = int(out.stdout.split("queued run ")[1].split(":")[0])
    cfg = httpx.get(f"{server.url}/api/runs/{run_id}").json()["config"]
    assert (cfg["dataset"], cfg["steps"]) == ("grid25", 7)
    # A job launched without a name is named after its file or dataset and its overrides, not "(unnamed)".
    assert cfg["name"] == "job"
    out = cli(home, "launch", "--set", "dataset=ring8", "--set", "steps=30", "--set", "lr_d=1e-3", "--no-follow",
              server=server.url)
    run_id = int(out.stdout.split("queued run ")[1].split(":")[0])
    assert httpx.get(f"{server.url}/api/runs/{run_id}").json()["name"] == "ring8 · steps=30 lr_d=1e-3"


def test_launch_names_each_bad_field(server: ServerProc, home: Path) -> None:
    out = cli(home, "launch", "--set", "batch_size=0", "--set", "image_size=33", "--set", "lr_dd=1",
              "--no-follow", server=server.url)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    for field in ("batch_size", "image_size", "lr_dd"):
        assert any(line.strip().startswith(f"{field}:") for line in lines), out.stderr
    assert "Traceback" not in out.stderr
    assert httpx.get(f"{server.url}/api/runs").json()["runs"] == []
    (home / "bad.yaml").write_text("- just\n- a list\n")
    out = cli(home, "launch", "bad.yaml", server=server.url)
    assert out.returncode == 2 and "mapping" in out.stderr


def test_token_from_flag_or_environment(home: Path) -> None:
    server = start_server(home, token=TOKEN)
    try:
        out = cli(home, "launch", "--set", "dataset=ring8", "--no-follow", server=server.url)
        assert out.returncode == 1 and "GANSCOPE_TOKEN" in out.stderr
        out = cli(home, "launch", "--set", "dataset=ring8", "--no-follow", "--token", "wrong", server=server.url)
        assert out.returncode == 1 and "refused the token" in out.stderr
        out = cli(home, "launch", "--set", "dataset=ring8", "--no-follow", server=server.url, GANSCOPE_TOKEN=TOKEN)
        assert out.returncode == 0, out.stderr
        out = cli(home, "launch", "--set", "dataset=ring8", "--no-follow", "--token", TOKEN, server=server.url)
        assert out.returncode == 0, out.stderr
        assert len(httpx.get(f"{server.url}/api/runs").json()["runs"]) == 2
        assert cli(home, "runs", server=server.url).returncode == 0  # reads need no token
    finally:
        server.stop()


def test_launch_follows_a_run_to_the_end_then_runs_lists_it(live: ServerProc, home: Path) -> None:
    sets = [f"{k}={v}" for k, v in {**TINY_TOY, "name": "followed"}.items()]
    out = cli(home, "launch", *[a for s in sets for a in ("--set", s)], "--interval", "0.3", server=live.url,
              timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "step 40/40 (100%)" in out.stdout and "succeeded" in out.stdout.splitlines()[-1]
    run_id = int(out.stdout.split("queued run ")[1].split(":")[0])
    table = cli(home, "runs", server=live.url).stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "STATUS", "HEALTH"]
    row = next(line for line in table if line.split()[0] == str(run_id))
    assert "followed" in row and "succeeded" in row and "40/40" in row
    listed = json.loads(cli(home, "runs", "--json", server=live.url).stdout)
    assert any(r["id"] == run_id and r["status"] == "succeeded" for r in listed)


def _launch_bg(home: Path, server: str, *sets: str) -> tuple[subprocess.Popen, int]:
    args = [a for s in sets for a in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "ganscope", "launch", *args, "--interval", "0.2"], cwd=home,
                            env=base_env(home, GANSCOPE_SERVER=server), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.startswith("queued run "), first + proc.stderr.read()
    return proc, int(first.split("queued run ")[1].split(":")[0])


def test_launch_prints_alerts_as_they_open_and_the_final_status(server: ServerProc, home: Path) -> None:
    # No worker: this test plays the worker over the real wire protocol so the signal is exact.
    proc, run_id = _launch_bg(home, server.url, "dataset=ring8", "steps=100", "name=alerting")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        claim = c.post("/api/workers/claim", json={"worker_id": "w-test", "host": "test", "devices": ["cpu"]})
        assert claim.status_code == 200 and claim.json()["run_id"] == run_id
        steps = list(range(1, 31))
        series = {"loss/d": {"steps": steps, "values": [None if s > 20 else 0.7 for s in steps]},
                  "loss/g": {"steps": steps, "values": ["nan" if s > 20 else 0.7 for s in steps]}}
        assert c.post(f"/api/runs/{run_id}/metrics", json={"series": series}).status_code == 200
        wait_for(lambda: c.get(f"/api/runs/{run_id}/alerts").json()["alerts"], timeout=30, what="an alert")
        time.sleep(1.0)  # let the follower print it before the run ends
        r = c.post(f"/api/runs/{run_id}/finish", json={"worker_id": "w-test", "status": "failed", "step": 30,
                                                        "error": "loss went NaN"})
        assert r.status_code == 200, r.text
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stdout + stderr
    assert "ALERT" in stdout and "nonfinite" in stdout, stdout
    assert stdout.index("ALERT") < stdout.index(f"run {run_id} failed")
    assert "loss went NaN" in stdout.splitlines()[-1]


def test_launch_reports_a_cancelled_run(server: ServerProc, home: Path) -> None:
    proc, run_id = _launch_bg(home, server.url, "dataset=ring8", "steps=10")
    assert httpx.post(f"{server.url}/api/runs/{run_id}/cancel").status_code == 200
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1 and f"run {run_id} cancelled" in stdout, stdout + stderr


def test_export_has_every_point(server: ServerProc, home: Path) -> None:
    run = httpx.post(f"{server.url}/api/runs", json={"name": "export", "config": {"dataset": "ring8"}}).json()
    run_id = run["id"]
    n = 130_000  # more steps than one export window: the export must page without downsampling
    sent_d = {s: math.sin(s / 97.0) for s in range(n)}
    sent_p = {s: (float("nan") if s == 500 else s / 3.0) for s in range(0, n, 10)}
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for lo in range(0, n, 45_000):
            chunk = [s for s in range(lo, min(n, lo + 45_000))]
            body = {"series": {
                "loss/d": {"steps": chunk, "values": [sent_d[s] for s in chunk]},
                "pred/real": {"steps": [s for s in chunk if s in sent_p],
                              "values": ["nan" if s == 500 else sent_p[s] for s in chunk if s in sent_p]}}}
            r = c.post(f"/api/runs/{run_id}/metrics", json=body)
            assert r.status_code == 200, r.text
    out = cli(home, "export", str(run_id), "--format", "csv", "--output", "m.csv", server=server.url, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = list(csv.reader(open(home / "m.csv")))
    assert rows[0] == ["metric", "step", "value"]
    got: dict[str, dict[int, str]] = {}
    for name, step, value in rows[1:]:
        got.setdefault(name, {})[int(step)] = value
    assert set(got) >= {"loss/d", "pred/real"}
    assert len(got["loss/d"]) == n and len(got["pred/real"]) == len(sent_p)
    assert all(float(got["loss/d"][s]) == v for s, v in sent_d.items())  # exact: repr round-trips
    assert got["pred/real"][500] == "nan" and float(got["pred/real"][510]) == 170.0
    out = cli(home, "export", str(run_id), "--format", "json", server=server.url, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["run"]["id"] == run_id
    series = data["metrics"]["pred/real"]
    assert series["steps"] == sorted(sent_p) and series["values"][50] is None
    assert data["metrics"]["loss/d"]["values"] == [sent_d[s] for s in range(n)]
    # The run page's download buttons serve exactly what the command writes.
    served = httpx.get(f"{server.url}/api/runs/{run_id}/export", params={"format": "csv"}, timeout=300)
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/csv")
    assert f'filename="run-{run_id}-metrics.csv"' in served.headers["content-disposition"]
    assert served.content == (home / "m.csv").read_bytes()
    served = httpx.get(f"{server.url}/api/runs/{run_id}/export", params={"format": "json"}, timeout=300)
    assert served.status_code == 200 and served.text == out.stdout
    bad = cli(home, "export", str(run_id), "--format", "xml", server=server.url)
    assert bad.returncode == 2 and "csv or json" in bad.stderr
    missing = cli(home, "export", "99999", server=server.url)
    assert missing.returncode == 1 and "404" in missing.stderr


@pytest.mark.timeout(600)  # two trainings and four torch-importing commands on a shared CPU
def test_latent_writes_interpolation_and_walk_pngs(live: ServerProc, home: Path) -> None:
    job = {"name": "latent", "dataset": "shapes", "image_size": 16, "nz": 8, "ngf": 8, "ndf": 8, "batch_size": 8,
           "steps": 4, "checkpoint_every": 2, "sample_every": 2, "flush_every": 2, "device": "cpu"}
    run_id = httpx.post(f"{live.url}/api/jobs", json=job).json()["id"]
    wait_for(lambda: httpx.get(f"{live.url}/api/runs/{run_id}").json()["status"] == "succeeded", timeout=180,
             what="the tiny image job")
    out = cli(home, "latent", str(run_id), "--out", "lat", "--steps", "5", "--dims", "0,3", "--samples", "9",
              server=live.url, timeout=180)
    assert out.returncode == 0, out.stderr
    files = {p.name: p.read_bytes() for p in (home / "lat").glob("*.png")}
    assert set(files) == {"samples.png", "interpolation.png", "walk-dim0.png", "walk-dim3.png"}
    assert all(b.startswith(PNG_MAGIC) for b in files.values())
    assert files["walk-dim0.png"] != files["walk-dim3.png"]  # different dimensions, different pictures
    from PIL import Image

    with Image.open(home / "lat" / "interpolation.png") as img:
        assert img.width > img.height  # 5 frames across, 4 rows down
    # A toy generator gets its scatter only (interpolations are pictures of images).
    toy = httpx.post(f"{live.url}/api/jobs", json=TINY_TOY).json()["id"]
    wait_for(lambda: httpx.get(f"{live.url}/api/runs/{toy}").json()["status"] == "succeeded", timeout=180,
             what="the toy job")
    out = cli(home, "latent", str(toy), "--out", "toy", server=live.url, timeout=180)
    assert out.returncode == 0, out.stderr
    assert [p.name for p in (home / "toy").glob("*.png")] == ["samples.png"]
    # The checkpoint is read from a temporary file: --out holds the pictures only.
    assert not list((home / "lat").glob("*.pt"))
    # An SDK run never uploads a checkpoint: a clear error, no traceback, nothing written.
    sdk = httpx.post(f"{live.url}/api/runs", json={"name": "sdk", "config": {}}).json()
    none = cli(home, "latent", str(sdk["id"]), "--out", "none", server=live.url)
    assert none.returncode == 1 and "logged with the SDK" in none.stderr and "Traceback" not in none.stderr
    assert not (home / "none").exists()
    # A job before its first checkpoint: says so once, and when one comes.
    early = httpx.post(f"{live.url}/api/jobs", json={**TINY_TOY, "steps": 100_000, "checkpoint_every": 50_000}).json()["id"]
    none = cli(home, "latent", str(early), "--out", "early", server=live.url)
    httpx.post(f"{live.url}/api/runs/{early}/cancel")
    assert none.returncode == 1 and none.stderr.count(f"run {early}") == 1, none.stderr
    assert "no checkpoint yet" in none.stderr and "every 50000 steps" in none.stderr
    assert not (home / "early").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_up(home: Path, port: int) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "ganscope", "up", "--home", str(home / "data"), "--port",
                             str(port), "--device", "cpu"], cwd=home, env=base_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("Press Ctrl-C"):
            return proc, lines
    proc.kill()
    raise AssertionError("`ganscope up` did not come up:\n" + "\n".join(lines))


def test_up_runs_server_worker_and_demo_then_stops_both(home: Path) -> None:
    port = free_port()
    proc, lines = _start_up(home, port)
    url = f"http://127.0.0.1:{port}"
    try:
        assert lines[0] == f"ganscope is up: {url}"
        pids = [int(p) for p in re.findall(r"pid (\d+)", lines[1])]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        assert "demo job queued" in "\n".join(lines)
        assert httpx.get(url + "/").status_code == 200
        runs = httpx.get(url + "/api/runs").json()["runs"]
        by_name = {r["name"]: r for r in runs}
        assert sorted(by_name) == ["demo: shapes 32px", "demo: shapes 32px, D overpowering"]
        assert all(r["dataset"] == "shapes" and r["key_config"]["image_size"] == 32 for r in runs)
        assert by_name["demo: shapes 32px, D overpowering"]["key_config"]["d_steps"] == 3
        demo_pid = int(re.findall(r"demo worker pid (\d+)", "\n".join(lines))[0])
        pids.append(demo_pid)
        wait_for(lambda: len(httpx.get(url + "/api/workers").json()["workers"]) == 2, timeout=60,
                 what="both workers")
        wait_for(lambda: all(r["status"] == "running" for r in httpx.get(url + "/api/runs").json()["runs"]),
                 timeout=120, what="both demo runs to start")
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, rest
    assert "stopped." in rest
    assert not any(_alive(p) for p in pids), "server or worker outlived `ganscope up`"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz", timeout=2)
    # Again on the same data: the demo is not queued twice, and the handed-back job resumes.
    proc, lines = _start_up(home, port)
    try:
        assert "demo job already there" in "\n".join(lines)
        runs = httpx.get(url + "/api/runs").json()["runs"]
        assert len(runs) == 2 and all(r["status"] in ("queued", "running") for r in runs)
        # The workers checkpointed as they handed the jobs back on Ctrl-C: the next ones resume from there.
        for r in runs:
            assert httpx.get(f"{url}/api/runs/{r['id']}/checkpoints/latest").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 0


def test_up_refuses_a_busy_port(home: Path) -> None:
    server = start_server(home)
    try:
        out = cli(home, "up", "--home", str(home / "d2"), "--port", str(server.port))
        assert out.returncode == 2 and "already in use" in out.stderr
    finally:
        server.stop()
