"""The client's disk spool: durable, ordered, replayed when the real server comes back, rejects bad batches.

The first tests exercise the spool on disk alone; the others run the real server process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.harness import REPO, base_env, free_port, start_server
from ganscope.trainer.client import Client, _sorted_unique, encode_values, json_safe
from ganscope.trainer.spool import Spool


def test_put_is_ordered_durable_and_survives_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    seqs = [spool.put("metrics", {"run_id": 1, "method": "POST", "path": f"/p/{i}"}, f"body{i}".encode())
            for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    # A crash mid-write leaves a temp file: it must never be replayed as an entry.
    (tmp_path / "s" / ".tmp-000000000099").write_bytes(b"half")
    spool.close()

    again = Spool(tmp_path / "s")
    entries = again.entries()
    assert [e.seq for e in entries] == seqs
    header, offset, size = Spool.read(entries[2])
    assert header["path"] == "/p/2" and Spool.body_bytes(entries[2], offset) == b"body2" and size == 5
    assert not list((tmp_path / "s").glob(".tmp-*"))
    # New entries continue after the old ones, never reusing a number.
    assert again.put("sample", {"run_id": 1, "method": "POST", "path": "/x"}, b"png") > seqs[-1]
    again.close()


def test_second_process_cannot_share_a_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    code = ("import sys; from ganscope.trainer.spool import Spool, SpoolBusy\n"
            "try:\n    Spool(sys.argv[1])\nexcept SpoolBusy as e:\n    print('busy:', e); sys.exit(3)\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], cwd=REPO, env=base_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "in use by another process" in p.stdout
    spool.close()
    Spool(tmp_path / "s").close()  # free again once the holder closed it


def test_reject_keeps_the_request_and_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.put("metrics", {"run_id": 1, "method": "POST", "path": "/a"}, b"{}")
    entry = spool.entries()[0]
    dest = spool.reject(entry, "HTTP 422: steps must be integers")
    assert spool.entries() == [] and dest.exists()
    assert "422" in (dest.parent / (dest.name + ".reason.txt")).read_text()
    assert spool.requeue_rejected() == 1 and [e.seq for e in spool.entries()] == [entry.seq]
    spool.close()


def test_checkpoint_body_is_a_copy_streamed_back(tmp_path: Path) -> None:
    src = tmp_path / "ckpt.pt"
    payload = bytes(range(256)) * 50_000  # 12.8 MB: above the streaming threshold
    src.write_bytes(payload)
    spool = Spool(tmp_path / "s")
    spool.put("checkpoint", {"run_id": 1, "method": "PUT", "path": "/c"}, body_file=src)
    src.write_bytes(b"overwritten by the loop")  # the spool must hold its own copy
    entry = spool.entries()[0]
    _, offset, size = Spool.read(entry)
    assert size == len(payload)
    assert b"".join(Spool.body_stream(entry, offset)) == payload
    spool.close()


def test_wire_encoding_of_values() -> None:
    assert encode_values([1.5, float("nan"), float("inf"), -math.inf, None, 2]) == [1.5, "nan", "inf", "-inf", None, 2.0]
    assert json_safe({"a": [1.0, float("nan")], "b": {"c": float("-inf")}}) == {"a": [1.0, None], "b": {"c": None}}
    # Out of order and repeated steps: sorted, first value kept (the server's rule).
    assert _sorted_unique([3, 1, 3, 2], [30.0, 10.0, 99.0, 20.0]) == {"steps": [1, 2, 3], "values": [10.0, 20.0, 30.0]}


def _job(client: httpx.Client, **cfg) -> int:
    body = {"name": "spool", "dataset": "ring8", "toy_hidden": 16, "batch_size": 32, "steps": 10, **cfg}
    r = client.post("/api/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _sdk_run(client: httpx.Client) -> int:
    r = client.post("/api/runs", json={"name": "spool-test", "config": {"dataset": "ring8"}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _metrics(client: httpx.Client, run_id: int, names: str) -> dict:
    r = client.get(f"/api/runs/{run_id}/metrics", params={"names": names, "max_points": 1_000_000})
    assert r.status_code == 200, r.text
    return r.json()["metrics"]


def test_spools_while_server_is_down_and_replays_in_order(home: Path, tmp_path: Path) -> None:
    port = free_port()
    server = start_server(home, port=port)
    try:
        run_id = _sdk_run(server.client())
        server.stop()
        client = Client(server.url, tmp_path / "spool", flush_seconds=0.05, max_backoff=0.5)
        # 30 batches while nobody listens: all of them wait on disk, training-side calls never block.
        t0 = time.monotonic()
        for b in range(30):
            client.log_metrics(run_id, {"loss/d": (list(range(b * 10, b * 10 + 10)), [0.5] * 9 + [float("nan")])})
            client.flush_metrics()
        assert time.monotonic() - t0 < 5.0
        assert client.flush(timeout=1.0) is False
        assert client.spool.count() == 30
        client.close(timeout=0)

        # A new client process on the same spool (the worker restarted) replays once the server is back.
        server.start()
        client = Client(server.url, tmp_path / "spool", flush_seconds=0.05, max_backoff=0.5)
        assert client.flush(timeout=30.0), f"spool not drained: {client.spool.count()} left"
        client.close()
        got = _metrics(server.client(), run_id, "loss/d")["loss/d"]
        assert got["steps"] == list(range(300))
        assert got["values"][9] is None and got["values"][0] == 0.5
        assert sum(v is None for v in got["values"]) == 30
    finally:
        server.stop()


def test_replay_of_accepted_batches_duplicates_nothing(server, tmp_path: Path) -> None:
    run_id = _sdk_run(server.client())
    client = Client(server.url, tmp_path / "spool", flush_seconds=0.05)
    series = {"loss/g": (list(range(100)), [float(i) for i in range(100)])}
    client.log_metrics(run_id, series)
    assert client.flush(10.0)
    # The same batch again (as after a lost answer) plus a later one with a changed first value.
    client.log_metrics(run_id, series)
    client.log_metrics(run_id, {"loss/g": ([0, 100], [-1.0, 100.0])})
    assert client.flush(10.0)
    client.close()
    got = _metrics(server.client(), run_id, "loss/g")["loss/g"]
    assert got["steps"] == list(range(101))
    assert got["values"][0] == 0.0, "ingest keeps the first value of a step"


def test_bad_batch_goes_to_rejected_and_does_not_block_the_rest(server, tmp_path: Path) -> None:
    run_id = _sdk_run(server.client())
    client = Client(server.url, tmp_path / "spool", flush_seconds=0.05)
    # Malformed on purpose, written straight into the spool: a steps list shorter than its values.
    bad = json.dumps({"series": {"loss/d": {"steps": [0, 1], "values": [1.0, 2.0, 3.0]}}}).encode()
    client.spool.put("metrics", {"run_id": run_id, "method": "POST", "path": f"/api/runs/{run_id}/metrics",
                                 "content_type": "application/json"}, bad)
    client.log_metrics(run_id, {"loss/d": ([5, 6], [0.1, 0.2])})
    assert client.flush(10.0)
    rejected = client.spool.rejected()
    assert len(rejected) == 1
    reason = rejected[0].parent / (rejected[0].name + ".reason.txt")
    assert "422" in reason.read_text()
    client.close()
    assert _metrics(server.client(), run_id, "loss/d")["loss/d"]["steps"] == [5, 6]


def test_token_is_sent_and_a_wrong_one_keeps_data(home: Path, tmp_path: Path) -> None:
    server = start_server(home, token="s3cret")
    try:
        run_id = _sdk_run(server.client(token="s3cret"))
        wrong = Client(server.url, tmp_path / "wrong", token="nope", flush_seconds=0.05, max_backoff=0.2)
        wrong.log_metrics(run_id, {"loss/d": ([0], [1.0])})
        # A wrong token is a configuration error, not a bad batch: the data waits, nothing is rejected.
        assert wrong.flush(1.5) is False
        assert wrong.spool.count() == 1 and wrong.spool.rejected() == []
        wrong.close(0)
        right = Client(server.url, tmp_path / "wrong", token="s3cret", flush_seconds=0.05)
        assert right.flush(10.0)
        right.close()
        assert _metrics(server.client(), run_id, "loss/d")["loss/d"]["steps"] == [0]
    finally:
        server.stop()


def test_metric_buffer_is_bounded(tmp_path: Path) -> None:
    points = 50_000
    # Nobody listens on this port: whatever the buffer cannot hold must already be on disk.
    client = Client(f"http://127.0.0.1:{free_port()}", tmp_path / "s", batch_points=1000, flush_seconds=3600)
    for i in range(0, points, 100):
        client.log_metrics(1, {"m": (list(range(i, i + 100)), [1.0] * 100)})
    assert client._buf_points < 1000
    assert client.spool.count() >= points // 1000 - 1
    client.close(0)
