"""The logging SDK, used by a user's own training script run as a real process against the real server."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.harness import ServerProc, base_env, free_port, start_server, wait_for

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


# A top-level loop, no `with`: the way many scripts are written. Floats only (no torch).
# argv: server spool steps mode; mode: "end" (returns), "raise", "forever" (until killed), "pause" (waits for
# spool/go after step 149), "stop" (declares on_failure: stop and logs a D that wins from step 0).
LOOP = textwrap.dedent(r"""
    import os, sys, time
    import ganscope

    server, spool, steps, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ganscope.Run  # the SDK's import (httpx, pydantic) is not what the timing below is about
    t0 = time.monotonic()
    declared = {"on_failure": "stop"} if mode.startswith("stop") else {}
    run = ganscope.init(server, name="loop " + mode, config={"mode": mode, "epochs": 3, "data": ["a", "b"]},
                        declared=declared, spool_dir=spool, flush_seconds=0.2,
                        raise_on_stop=mode == "stop-raise", heartbeat_seconds=float(os.environ.get("HB", "10")))
    print("STARTED", round(time.monotonic() - t0, 2), run.id, flush=True)
    step = 0
    while step < steps or mode == "forever":
        if mode.startswith("stop"):
            run.log({"loss/d": 0.001, "pred/real": 0.999, "pred/fake": 0.001, "loss/g": 7.0}, step=step)
            if run.should_stop():
                print("STOPPED", step, run.reason, flush=True)
                break
            time.sleep(0.005)
        else:
            run.log({"loss/d": 1.0 / (1 + step), "loss/g": 2.0 + step * 1e-3}, step=step)
        if mode == "forever":
            if step == 20:
                print("RUN", run.id, flush=True)
            time.sleep(0.01)
        if mode == "raise" and step == 50:
            raise ValueError("bad batch at step 50")
        if mode == "pause" and step == 149:
            print("PAUSED", flush=True)
            while not os.path.exists(os.path.join(spool, "go")):
                time.sleep(0.05)
        step += 1
    print("RUN", run.id, flush=True)
    if mode == "pause":
        run.finish()
        print("FINISHED", run.id, flush=True)
""")


def _loop(tmp_path: Path, url: str, steps: int, mode: str, **env: str) -> subprocess.Popen:
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, str(script), url, str(spool), str(steps), mode], cwd=tmp_path,
                            env=base_env(tmp_path, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_line(p: subprocess.Popen, prefix: str) -> tuple[str, list[str]]:
    assert p.stdout is not None
    seen: list[str] = []
    while True:
        line = p.stdout.readline()
        assert line, "".join(seen)
        seen.append(line)
        if line.startswith(prefix):
            return line, seen


def _steps(server: ServerProc, run_id: int, name: str = "loss/g") -> list[int]:
    got = server.client().get(f"/api/runs/{run_id}/metrics", params={"names": name, "max_points": 100_000}).json()
    return got["metrics"].get(name, {"steps": []})["steps"]


def test_script_ending_without_finish_succeeds_and_keeps_its_own_config(server, tmp_path: Path) -> None:
    p = _loop(tmp_path, server.url, 120, "end")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    run_id = _run_id(out)
    run = server.client().get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded", run  # atexit finished it: no run.finish() in the script
    assert run["user_config"] == {"mode": "end", "epochs": 3, "data": ["a", "b"]}
    assert run["config"] == {} and run["total_steps"] is None and run["key_config"] == {}
    assert _steps(server, run_id) == list(range(120))


def test_uncaught_exception_in_a_top_level_loop_fails_the_run(server, tmp_path: Path) -> None:
    p = _loop(tmp_path, server.url, 120, "raise")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 1 and "Traceback" in out and "bad batch at step 50" in out  # the script's own report
    run = server.client().get(f"/api/runs/{_run_id_from_started(out)}").json()
    assert run["status"] == "failed" and run["error"] == "ValueError: bad batch at step 50", run
    assert _steps(server, run["id"]) == list(range(51))


def _run_id_from_started(out: str) -> int:
    return int(next(line.split()[2] for line in out.splitlines() if line.startswith("STARTED ")))


def test_sigterm_finishes_the_run_as_failed_and_exits_as_killed(server, tmp_path: Path) -> None:
    p = _loop(tmp_path, server.url, 0, "forever")
    line, _ = _wait_line(p, "RUN ")
    run_id = int(line.split()[1])
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=90)
    assert p.returncode == 128 + signal.SIGTERM, out  # the status a shell reports for a SIGTERM death
    run = server.client().get(f"/api/runs/{run_id}").json()
    assert run["status"] == "failed" and run["error"].startswith("terminated by SIGTERM"), run
    logged = _steps(server, run_id)
    assert logged == list(range(len(logged))) and len(logged) > 20  # every point up to the signal


def test_ctrl_c_cancels_the_run(server, tmp_path: Path) -> None:
    p = _loop(tmp_path, server.url, 0, "forever")
    line, _ = _wait_line(p, "RUN ")
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=90)
    assert p.returncode == -signal.SIGINT and "KeyboardInterrupt" in out  # Python dies by SIGINT, as without us
    run = server.client().get(f"/api/runs/{int(line.split()[1])}").json()
    assert run["status"] == "cancelled" and "KeyboardInterrupt" in run["error"], run


def test_kill_9_fails_the_run_within_a_minute(server, tmp_path: Path) -> None:
    # Default settings on both sides: heartbeats every 10 s, the server gives up after 30 s of silence.
    p = _loop(tmp_path, server.url, 0, "forever")
    line, _ = _wait_line(p, "RUN ")
    run_id = int(line.split()[1])
    c = server.client()
    wait_for(lambda: c.get(f"/api/runs/{run_id}").json()["heartbeat_at"] and _had_heartbeat(tmp_path, p), 20,
             what="a heartbeat")
    p.kill()
    p.wait()
    killed = time.monotonic()
    run = wait_for(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"] == "failed" and r, timeout=70,
                   interval=0.5, what="the run to fail")
    assert time.monotonic() - killed < 60
    assert run["error"] == "the script stopped sending heartbeats (killed?)", run


def _had_heartbeat(tmp_path: Path, p: subprocess.Popen) -> bool:
    # The first heartbeat goes out `heartbeat_seconds` after the run exists; give it that long.
    time.sleep(11)
    return p.poll() is None


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_paused_script_comes_back(home: Path, tmp_path: Path, db: str, request: pytest.FixtureRequest) -> None:
    # A suspended script (a laptop asleep, SIGSTOP) looks dead to the server; its next heartbeat revives the run.
    url = request.getfixturevalue("pg_url") if db == "postgres" else None
    server = start_server(home, database_url=url, GANSCOPE_SDK_HEARTBEAT_SECONDS="2")
    try:
        p = _loop(tmp_path, server.url, 0, "forever", HB="0.3")
        line, _ = _wait_line(p, "RUN ")
        run_id = int(line.split()[1])
        c = server.client()
        time.sleep(1.0)
        p.send_signal(signal.SIGSTOP)
        failed = wait_for(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"] == "failed" and r, timeout=30,
                          what="failed")
        assert failed["error"] == "the script stopped sending heartbeats (killed?)"
        p.send_signal(signal.SIGCONT)
        run = wait_for(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"] == "running" and r, timeout=30,
                       what="running again")
        assert run["error"] is None
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
        assert c.get(f"/api/runs/{run_id}").json()["status"] == "failed"
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["stop", "stop-raise"])
def test_on_failure_stop_reaches_a_users_loop(server, tmp_path: Path, mode: str) -> None:
    # The loop logs a D that wins from step 0; under on_failure: stop the detector asks the run to stop, and
    # should_stop() (or, opted in, RunStopped from run.log) ends the loop.
    p = _loop(tmp_path, server.url, 3000, mode)
    out, _ = p.communicate(timeout=180)
    run_id = _run_id_from_started(out)
    run = server.client().get(f"/api/runs/{run_id}").json()
    assert run["status"] == "stopped" and run["stop_reason"].startswith("d_overpowering"), (run, out)
    if mode == "stop":
        assert p.returncode == 0 and "STOPPED" in out, out
        assert int(next(x for x in out.splitlines() if x.startswith("STOPPED")).split()[1]) < 1000
    else:
        # Not caught by the script: the exception ends it, reported as the run's stop, not as a crash.
        assert p.returncode == 1 and "RunStopped" in out and "d_overpowering" in out, out
        assert run["error"] and "d_overpowering" in run["error"]


def test_server_down_at_init_starts_offline_and_sends_everything_once(home: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    p = _loop(tmp_path, url, 300, "pause")
    line, _ = _wait_line(p, "STARTED ")
    assert float(line.split()[1]) < 3.0 and line.split()[2] == "None"  # training started at once, offline
    _wait_line(p, "PAUSED")
    server = start_server(home, port=port)
    try:
        (tmp_path / "spool" / "go").write_text("")
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
        finished = next(x for x in out.splitlines() if x.startswith("FINISHED"))
        run_id = int(finished.split()[1])  # the script learnt its run's id once the server answered
        c = server.client()
        run = c.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "succeeded" and run["name"] == "loop pause", run
        assert run["user_config"]["mode"] == "pause"
        assert _steps(server, run_id) == list(range(300))
        assert c.get("/api/runs", params={"q": "loop pause"}).json()["total"] == 1  # created once
        assert not list((tmp_path / "spool").glob("sdk-*"))
    finally:
        server.stop()


def test_spool_of_a_script_that_never_reached_the_server_is_replayed_once(home: Path, tmp_path: Path) -> None:
    import shutil

    from ganscope.trainer import sdk

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    p = _loop(tmp_path, url, 80, "end")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0 and "ganscope.replay(" in out, out  # it says how to send the rest later
    [folder] = list((tmp_path / "spool").glob("sdk-*"))
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    server = start_server(home, port=port)
    try:
        assert sdk.replay(url, folder, timeout=60)
        assert sdk.replay(url, copy, timeout=60)  # the same creation and points again: no second run
        c = server.client()
        runs = c.get("/api/runs", params={"q": "loop end"}).json()["runs"]
        assert len(runs) == 1 and runs[0]["status"] == "succeeded", runs
        assert _steps(server, runs[0]["id"]) == list(range(80))
    finally:
        server.stop()
