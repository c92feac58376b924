"""The logging SDK, used by a user's own training script run as a real process against the real server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.harness import REPO, base_env, free_port, start_server, wait_for

# The user's script: plain Python, no torch. NaN at every 37th step; a PNG every 100 steps.
SCRIPT = textwrap.dedent('''
    import math, struct, sys, time, zlib
    from ganscope.trainer import sdk

    def png(w, h, shade):
        raw = b"".join(b"\\x00" + bytes([shade, 255 - shade, 128]) * w for _ in range(h))
        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
        return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

    server, spool, n, fail_at, pause_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    with sdk.init(server, name="my own loop", config={"dataset": "ring8", "lr_d": 1e-4}, spool_dir=spool,
                  flush_seconds=0.2) as run:
        print("RUN", run.id, flush=True)
        for step in range(n):
            d = float("nan") if step % 37 == 36 else 1.0 / (1 + step)
            run.log({"loss/d": d, "loss/g": 2.0 + step * 1e-3}, step=step)
            if step % 100 == 0:
                run.log_image(step, png(8, 8, step % 256))
            if step == fail_at:
                raise RuntimeError("user code blew up at step %d" % step)
            if step == pause_at:
                print("PAUSED", flush=True)
                while not __import__("os").path.exists(spool + "/go"):
                    time.sleep(0.05)
    print("TORCH_IMPORTED", "torch" in sys.modules, flush=True)
''')


def _run_script(tmp_path: Path, url: str, n: int, fail_at: int = -1, pause_at: int = -1) -> subprocess.Popen:
    script = tmp_path / "user_train.py"
    script.write_text(SCRIPT)
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, str(script), url, str(spool), str(n), str(fail_at), str(pause_at)],
                            cwd=tmp_path, env=base_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _run_id(out: str) -> int:
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("RUN ")))


def test_script_logs_points_nan_and_images_then_succeeds(server, tmp_path: Path) -> None:
    p = _run_script(tmp_path, server.url, 300)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert "TORCH_IMPORTED False" in out, "the SDK must not need torch"
    run_id = _run_id(out)
    c = server.client()
    run = c.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["kind"] == "sdk", run
    got = c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/d,loss/g", "max_points": 100_000}).json()
    d, g = got["metrics"]["loss/d"], got["metrics"]["loss/g"]
    assert d["steps"] == list(range(300)) and g["steps"] == list(range(300))
    nan_steps = [s for s, v in zip(d["steps"], d["values"]) if v is None]
    assert nan_steps == [s for s in range(300) if s % 37 == 36]  # 8 NaN, each read back as null
    assert d["values"][3] == pytest.approx(0.25)
    assert g["values"][299] == pytest.approx(2.299)
    samples = c.get(f"/api/runs/{run_id}/samples").json()["samples"]
    assert sorted(s["step"] for s in samples) == [0, 100, 200]
    img = c.get(samples[0]["url"])
    assert img.status_code == 200 and img.content.startswith(b"\x89PNG")
    # Drained spool folders are cleaned up: nothing left behind on the user's disk.
    assert not list((tmp_path / "spool").glob("sdk-new-*"))


def test_exception_in_script_marks_the_run_failed(server, tmp_path: Path) -> None:
    p = _run_script(tmp_path, server.url, 300, fail_at=120)
    out, _ = p.communicate(timeout=120)
    assert p.returncode != 0 and "user code blew up" in out
    run_id = _run_id(out)
    run = server.client().get(f"/api/runs/{run_id}").json()
    assert run["status"] == "failed", run
    assert "user code blew up at step 120" in (run["error"] or "")
    got = server.client().get(f"/api/runs/{run_id}/metrics", params={"names": "loss/g", "max_points": 1000}).json()
    assert got["metrics"]["loss/g"]["steps"] == list(range(121))  # every point before the crash arrived


def test_server_restart_during_a_script_loses_nothing(home: Path, tmp_path: Path) -> None:
    server = start_server(home, port=free_port())
    try:
        p = _run_script(tmp_path, server.url, 400, pause_at=150)
        # Stop the server while the script is paused after step 150, then let it log 250 more.
        assert p.stdout is not None
        lines: list[str] = []
        while "PAUSED" not in "".join(lines):
            line = p.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        run_id = _run_id("".join(lines))
        server.kill()
        (tmp_path / "spool" / "go").write_text("")
        time.sleep(2.0)  # the script logs the rest into its spool, and then blocks in finish
        server.start()
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, "".join(lines) + out
        c = server.client()
        wait_for(lambda: c.get(f"/api/runs/{run_id}").json()["status"] == "succeeded", timeout=30,
                 what="run finished")
        got = c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/g", "max_points": 100_000}).json()
        assert got["metrics"]["loss/g"]["steps"] == list(range(400))
    finally:
        server.stop()


def test_unreachable_server_is_reported_after_the_retry_budget(tmp_path: Path) -> None:
    code = textwrap.dedent(f'''
        import time
        from ganscope.trainer import sdk
        t0 = time.monotonic()
        try:
            sdk.Run("http://127.0.0.1:{free_port()}", spool_dir={str(tmp_path)!r}, connect_for=2)
        except sdk.ServerUnavailable as e:
            print("UNAVAILABLE", round(time.monotonic() - t0), e)
    ''')
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=base_env(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert "UNAVAILABLE" in p.stdout and "POST /api/runs" in p.stdout, p.stdout + p.stderr
    assert int(p.stdout.split()[1]) <= 5  # gave up after its budget, not hanging forever
    assert not list(tmp_path.glob("sdk-new-*")), "no empty spool folder left behind"
