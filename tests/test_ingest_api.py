"""Ingest through the real server: metrics batches, samples, snapshots, checkpoints; 4xx shapes; 503s."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ServerProc, start_server


def png(w: int = 2, h: int = 2) -> bytes:
    """A valid tiny PNG, built by hand (no imaging library needed)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    raw = b"".join(b"\x00" + b"\x80\x20\x10" * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = start_server(tmp_path_factory.mktemp("ingest"), GANSCOPE_MAX_REQUEST_MB="0.05")
    yield s
    s.stop()


@pytest.fixture
def c(srv: ServerProc) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def sdk_run(c: httpx.Client, name: str = "sdk") -> int:
    r = c.post("/api/runs", json={"name": name, "config": {"dataset": "ring8"}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def post_raw(c: httpx.Client, rid: int, text: str) -> httpx.Response:
    return c.post(f"/api/runs/{rid}/metrics", content=text.encode(), headers={"content-type": "application/json"})


def test_batch_roundtrip_and_non_finite(c: httpx.Client) -> None:
    rid = sdk_run(c)
    # bare NaN (Python's json.dumps), the string forms and null all mean non-finite values
    r = post_raw(c, rid, '{"series": {"loss/d": {"steps": [0, 1, 2, 3, 4], "values": [0.7, NaN, "inf", "-inf", null]},'
                         ' "pred/real": {"steps": [0, 1], "values": [0.5, 0.6]}}}')
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 7, "duplicates": 0, "action": "continue", "reason": None}
    got = c.get(f"/api/runs/{rid}/metrics", params={"names": "loss/d,pred/real"})
    assert "NaN" not in got.text and "Infinity" not in got.text
    m = got.json()["metrics"]
    assert m["loss/d"] == {"steps": [0, 1, 2, 3, 4], "values": [0.7, None, None, None, None]}
    assert m["pred/real"]["values"] == [0.5, 0.6]
    run = c.get(f"/api/runs/{rid}").json()
    assert run["step"] == 4 and run["last"]["pred/real"] == 0.6 and run["last"]["loss/d"] is None


def test_replay_counts_duplicates_and_keeps_first_values(c: httpx.Client) -> None:
    rid = sdk_run(c)
    body = {"series": {"m": {"steps": [1, 2, 3], "values": [1.0, 2.0, 3.0]}}}
    assert c.post(f"/api/runs/{rid}/metrics", json=body).json()["accepted"] == 3
    body2 = {"series": {"m": {"steps": [2, 3, 4], "values": [20.0, 30.0, 40.0]}}}
    assert c.post(f"/api/runs/{rid}/metrics", json=body2).json() | {"action": "x"} == \
        {"accepted": 1, "duplicates": 2, "action": "x", "reason": None}
    vals = c.get(f"/api/runs/{rid}/metrics", params={"names": "m"}).json()["metrics"]["m"]["values"]
    assert vals == [1.0, 2.0, 3.0, 40.0]


@pytest.mark.parametrize("body, loc, words", [
    ({"nope": 1}, ["body", "series"], "series"),
    ({"series": {"m": {"steps": [1, 2], "values": [1.0]}}}, ["body", "series", "m"], "2 steps but 1 values"),
    ({"series": {"m": {"steps": [1.5], "values": [1.0]}}}, ["body", "series", "m", "steps"], "integers"),
    ({"series": {"m": {"steps": [-1], "values": [1.0]}}}, ["body", "series", "m", "steps"], ">= 0"),
    ({"series": {"m": {"steps": [1], "values": ["lots"]}}}, ["body", "series", "m", "values"], "numbers"),
    ({"series": {"m": {"steps": [1], "values": [[1, 2]]}}}, ["body", "series", "m", "values"], "values"),
    ({"series": {"bad\nname": {"steps": [1], "values": [1]}}}, ["body", "series", "bad\nname"], "metric name"),
    ({"series": {"m": [1, 2]}}, ["body", "series", "m"], "expected"),
])
def test_malformed_batches_get_422_naming_the_problem(c: httpx.Client, body, loc, words) -> None:
    rid = sdk_run(c)
    r = c.post(f"/api/runs/{rid}/metrics", json=body)
    assert r.status_code == 422, r.text
    item = r.json()["detail"][0]
    assert item["loc"] == loc and words in item["msg"]
    # nothing of a rejected batch is stored
    assert c.get(f"/api/runs/{rid}").json()["metric_names"] == []


def test_not_json_unknown_run_and_oversized(c: httpx.Client) -> None:
    rid = sdk_run(c)
    r = post_raw(c, rid, "{not json")
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"][0]["msg"]
    r = c.post("/api/runs/987654/metrics", json={"series": {"m": {"steps": [1], "values": [1]}}})
    assert r.status_code == 404 and "987654" in r.json()["detail"]
    big = {"series": {"m": {"steps": list(range(20_000)), "values": [0.5] * 20_000}}}  # > 0.05 MiB
    r = c.post(f"/api/runs/{rid}/metrics", json=big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield json.dumps(big).encode()
    r = c.post(f"/api/runs/{rid}/metrics", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_samples_upload_list_serve_and_replace(c: httpx.Client) -> None:
    rid = sdk_run(c)
    first, second = png(2, 2), png(3, 1)
    r = c.post(f"/api/runs/{rid}/samples", params={"step": 100, "kind": "grid"}, content=first,
               headers={"content-type": "image/png"})
    assert r.status_code == 201 and r.json()["url"].endswith("/samples/grid/100.png")
    c.post(f"/api/runs/{rid}/samples", params={"step": 200}, content=first)
    c.post(f"/api/runs/{rid}/samples", params={"step": 100}, content=second)  # re-upload replaces
    listed = c.get(f"/api/runs/{rid}/samples").json()["samples"]
    assert [(s["step"], s["kind"]) for s in listed] == [(100, "grid"), (200, "grid")]
    img = c.get(listed[0]["url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content == second
    assert c.get(f"/api/runs/{rid}/samples/grid/300.png").status_code == 404
    r = c.post(f"/api/runs/{rid}/samples", params={"step": 1}, content=b"GIF89a....")
    assert r.status_code == 415
    r = c.post(f"/api/runs/{rid}/samples", params={"step": 1, "kind": "../../etc"}, content=first)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "kind"]
    r = c.post(f"/api/runs/{rid}/samples", params={"step": -3}, content=first)
    assert r.status_code == 422


def test_snapshots(c: httpx.Client) -> None:
    rid = sdk_run(c)
    for step in (100, 200, 300):
        payload = {"dim": 1, "x": [0.0, 1.0], "real_density": [0.1, float(step)], "fake_density": [0.2, 0.3],
                   "d_output": [0.5, 0.5]}
        assert c.post(f"/api/runs/{rid}/snapshots", json={"step": step, "kind": "toy", "payload": payload}).status_code == 201
    r = c.post(f"/api/runs/{rid}/snapshots", content=b'{"step": 400, "kind": "toy", "payload": {"dim": 1, "x": [NaN]}}',
               headers={"content-type": "application/json"})
    assert r.status_code == 201
    got = c.get(f"/api/runs/{rid}/snapshots").json()
    assert got["steps"] == [100, 200, 300, 400] and got["snapshot"]["payload"]["x"] == [None]
    at = c.get(f"/api/runs/{rid}/snapshots", params={"step": 250}).json()["snapshot"]
    assert at["step"] == 200 and at["payload"]["real_density"] == [0.1, 200.0]
    r = c.post(f"/api/runs/{rid}/snapshots", json={"step": "soon", "payload": []})
    assert r.status_code == 422 and {tuple(d["loc"]) for d in r.json()["detail"]} == {("body", "step"), ("body", "payload")}


def test_checkpoints(c: httpx.Client) -> None:
    rid = sdk_run(c)
    assert c.get(f"/api/runs/{rid}/checkpoints/latest").status_code == 404
    blob = bytes(range(256)) * 1000  # larger than the JSON limit: uploads have their own
    assert c.put(f"/api/runs/{rid}/checkpoints/500", content=blob).json() == {"step": 500, "size": len(blob)}
    assert c.put(f"/api/runs/{rid}/checkpoints/1000", content=b"newer").status_code == 201
    assert c.put(f"/api/runs/{rid}/checkpoints/700", content=b"older").status_code == 201
    latest = c.get(f"/api/runs/{rid}/checkpoints/latest")
    assert latest.content == b"newer" and latest.headers["x-ganscope-step"] == "1000"
    assert c.get(f"/api/runs/{rid}/checkpoints/500").content == blob
    assert [x["step"] for x in c.get(f"/api/runs/{rid}/checkpoints").json()["checkpoints"]] == [500, 700, 1000]
    assert c.get(f"/api/runs/{rid}").json()["checkpoint_step"] == 1000
    assert c.put(f"/api/runs/{rid}/checkpoints/5", content=b"").status_code == 422
    assert c.put("/api/runs/424242/checkpoints/5", content=b"x").status_code == 404


def test_disk_error_is_a_503_naming_the_cause(srv: ServerProc, c: httpx.Client) -> None:
    rid = sdk_run(c)
    # Put a file where the run's artifact folder must go: every write below it fails with an OS error.
    runs_dir = srv.home / "artifacts" / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / str(rid)).write_text("in the way")
    r = c.post(f"/api/runs/{rid}/samples", params={"step": 1}, content=png())
    assert r.status_code == 503 and r.json()["detail"].startswith("storage error while saving a sample")
    r = c.put(f"/api/runs/{rid}/checkpoints/1", content=b"x")
    assert r.status_code == 503 and "storage error" in r.json()["detail"]
    assert "storage error while saving a sample" in Path(srv.log_path).read_text()
    assert c.get(f"/api/runs/{rid}/samples").json()["samples"] == []  # nothing half-recorded


def test_auth_when_a_token_is_set(tmp_path: Path) -> None:
    s = start_server(tmp_path / "auth", token="s3cret")
    try:
        with s.client() as anon, s.client(token="s3cret") as ok, s.client(token="wrong") as bad:
            assert anon.post("/api/jobs", json={}).status_code == 401
            assert bad.post("/api/jobs", json={}).status_code == 401
            rid = ok.post("/api/jobs", json={"dataset": "ring8"}).json()["id"]
            for call in (lambda cl: cl.post(f"/api/runs/{rid}/metrics", json={"series": {}}),
                         lambda cl: cl.post("/api/workers/claim", json={"worker_id": "w"}),
                         lambda cl: cl.post(f"/api/runs/{rid}/cancel"),
                         lambda cl: cl.put(f"/api/runs/{rid}/checkpoints/1", content=b"x")):
                assert call(anon).status_code == 401
            assert anon.get(f"/api/runs/{rid}").status_code == 200  # reads stay open
            assert ok.post("/api/workers/claim", json={"worker_id": "w"}).status_code == 200
    finally:
        s.stop()


def test_concurrent_overlapping_batches_store_each_point_once(any_server: ServerProc) -> None:
    """Four senders, overlapping step ranges, one run: every step stored exactly once, on both databases
    (PostgreSQL serialises a run's batches with a row lock; SQLite with its single write path)."""
    import threading

    with any_server.client() as c:
        rid = c.post("/api/runs", json={"name": "race"}).json()["id"]
    accepted: list[int] = []
    errors: list[str] = []

    def sender(k: int) -> None:
        with any_server.client() as own:
            for lo in range(0, 2000, 100):
                steps = list(range(max(0, lo - 50 * k), lo + 100))  # each sender overlaps the others
                body = {"series": {name: {"steps": steps, "values": [float(k)] * len(steps)}
                                   for name in ("loss/d", "loss/g")}}
                r = own.post(f"/api/runs/{rid}/metrics", json=body)
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    accepted.append(r.json()["accepted"])

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sum(accepted) == 2 * 2000
    with any_server.client() as c:
        got = c.get(f"/api/runs/{rid}/metrics", params={"max_points": 5000}).json()["metrics"]
        for name in ("loss/d", "loss/g"):
            assert got[name]["steps"] == list(range(2000))
        detail = c.get(f"/api/runs/{rid}").json()
        assert detail["step"] == 1999
