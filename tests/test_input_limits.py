"""Input limits (server/inputs.py, server/api/wire.py): every input that used to give a 500 now gets a clear
4xx naming the problem, on SQLite and PostgreSQL, against the real server over HTTP."""

from __future__ import annotations

import httpx

from tests.harness import ServerProc

MAX_ID = 2**31 - 1
MAX_INT64 = 2**63 - 1


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _setup(c: httpx.Client) -> tuple[int, int]:
    job = c.post("/api/jobs", json={"dataset": "ring8", "steps": 10})
    assert job.status_code == 201, job.text
    sdk = c.post("/api/runs", json={"name": "sdk", "config": {"dataset": "ring8"}})
    assert sdk.status_code == 201, sdk.text
    return job.json()["id"], sdk.json()["id"]


def _detail(r: httpx.Response) -> str:
    d = r.json()["detail"]
    return d if isinstance(d, str) else "; ".join(e["msg"] for e in d)


def test_ids_beyond_the_schema_are_not_found(any_server: ServerProc) -> None:
    url = any_server.url
    with any_server.client() as c:
        job_id, _ = _setup(c)
        for big in (MAX_ID + 1, 2**63, 10**30):
            for path in (f"/api/runs/{big}", f"/api/runs/{big}/metrics", f"/api/runs/{big}/stream",
                         f"/api/runs/{big}/alerts", f"/api/runs/{big}/checkpoints/latest", f"/runs/{big}",
                         f"/api/runs/{big}/samples/grid/1.png"):
                r = c.get(path)
                assert r.status_code == 404, f"GET {path}: {r.status_code} {r.text[:200]}"
                assert str(MAX_ID) in r.text
            for method, path in (("post", f"/api/runs/{big}/cancel"), ("delete", f"/api/runs/{big}"),
                                 ("post", f"/api/runs/{big}/metrics"), ("post", f"/api/runs/{big}/heartbeat")):
                r = c.request(method, path, json={})
                assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text[:200]}"
        # The worker heartbeat names a run in its body: bounded the same way (422 from the schema).
        r = c.post("/api/workers/heartbeat", json={"worker_id": "w1", "run_id": MAX_ID + 1, "step": 1})
        assert r.status_code == 422, r.text
        # The largest storable id is an ordinary unknown run.
        assert c.get(f"/api/runs/{MAX_ID}").status_code == 404
        assert c.get(f"/api/runs/{job_id}").status_code == 200
        # Steps are 64-bit: the very top is refused where the server adds one to it, not overflowed.
        r = c.get(f"/api/runs/{job_id}/metrics", params={"since_step": MAX_INT64})
        assert r.status_code == 422, r.text
        assert c.get(f"/api/runs/{job_id}/metrics", params={"since_step": MAX_INT64 - 1}).status_code == 200
    assert "Traceback" not in any_server.log(None), any_server.log()
    assert httpx.get(url + "/healthz").status_code == 200


def test_nul_characters_are_refused(any_server: ServerProc) -> None:
    with any_server.client() as c:
        job_id, sdk_id = _setup(c)
        for path, params in (("/api/runs", {"q": "\x00"}), (f"/api/runs/{job_id}/samples", {"kind": "\x00"}),
                             (f"/api/runs/{job_id}/snapshots", {"kind": "a\x00"}),
                             (f"/api/runs/{job_id}/metrics", {"names": "a\x00b"})):
            r = c.get(path, params=params)
            assert r.status_code == 422 and "NUL" in _detail(r), f"{path} {params}: {r.status_code} {r.text}"
        r = c.post("/api/jobs", json={"dataset": "ring8", "name": "a\x00b"})
        assert r.status_code == 422 and "NUL" in _detail(r), r.text
        assert r.json()["detail"][0]["loc"] == ["body", "name"]  # the answer names the field
        r = c.post(f"/api/runs/{sdk_id}/metrics", json={"series": {"a\x00": {"steps": [1], "values": [1.0]}}})
        assert r.status_code == 422, r.text
        r = c.patch(f"/api/runs/{job_id}", json={"note": "x\x00"})
        assert r.status_code == 422 and "NUL" in _detail(r), r.text
    assert "Traceback" not in any_server.log(None), any_server.log()


def test_lone_surrogates_are_refused_and_pairs_kept(any_server: ServerProc) -> None:
    with any_server.client() as c:
        _, sdk_id = _setup(c)
        for raw in ('{"series": {"\\ud800": {"steps": [1], "values": [1.0]}}}',
                    '{"series": {"a\\udc00b": {"steps": [1], "values": [1.0]}}}'):
            r = c.post(f"/api/runs/{sdk_id}/metrics", content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == 422 and "surrogate" in _detail(r), r.text
        r = c.post("/api/jobs", content='{"dataset": "ring8", "name": "x\\ud83d"}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "surrogate" in _detail(r), r.text
        # A proper pair is just an emoji; an escaped backslash before "u" is just text.
        r = c.post("/api/jobs", content='{"dataset": "ring8", "name": "\\ud83d\\ude00 \\\\ud800"}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 201 and r.json()["name"] == "\U0001f600 \\ud800", r.text
    assert "Traceback" not in any_server.log(None), any_server.log()


def test_json_depth_is_limited_before_parsing(any_server: ServerProc) -> None:
    with any_server.client() as c:
        _, sdk_id = _setup(c)
        for path in ("/api/jobs", "/api/runs", f"/api/runs/{sdk_id}/metrics", f"/api/runs/{sdk_id}/snapshots",
                     "/api/workers/claim"):
            for depth in (100, 1_025, 100_000):
                r = c.post(path, content=_deep(depth), headers={"Content-Type": "application/json"})
                assert r.status_code == 422 and "nested deeper than 64" in _detail(r), f"{path} {depth}: {r.text}"
        payload = '{"step": 1, "kind": "toy", "payload": {"x": %s}}'
        r = c.post(f"/api/runs/{sdk_id}/snapshots", content=payload % _deep(1_000),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        # Brackets inside strings do not count; modest nesting is fine.
        r = c.post(f"/api/runs/{sdk_id}/snapshots", json={"step": 1, "payload": {"x": "[" * 500, "y": [[[1]]]}})
        assert r.status_code == 201, r.text
    assert "Traceback" not in any_server.log(None), any_server.log()


def test_strict_types_on_the_wire(any_server: ServerProc) -> None:
    with any_server.client() as c:
        job_id, sdk_id = _setup(c)
        for body in ({"dataset": "ring8", "steps": True}, {"dataset": "ring8", "priority": False}):
            r = c.post("/api/jobs", json=body)
            assert r.status_code == 422 and "boolean" in _detail(r), r.text
        r = c.patch(f"/api/runs/{job_id}", json={"priority": False})
        assert r.status_code == 422, r.text
        assert c.patch(f"/api/runs/{job_id}", json={"priority": 3}).json()["priority"] == 3
        r = c.post(f"/api/runs/{sdk_id}/heartbeat", json={"step": False})
        assert r.status_code == 422, r.text
        r = c.post("/api/workers/heartbeat", json={"worker_id": "w1", "run_id": job_id, "step": True})
        assert r.status_code == 422, r.text
        for values in (["1.5"], [True], [1.0, "x"], [{"a": 1}]):
            r = c.post(f"/api/runs/{sdk_id}/metrics", json={"series": {"m": {"steps": [1], "values": values}}})
            assert r.status_code == 422 and "values" in r.text, (values, r.text)
        r = c.post(f"/api/runs/{sdk_id}/metrics", json={"series": {"m": {"steps": [False], "values": [1.0]}}})
        assert r.status_code == 422, r.text
        # The contract's non-finite spellings and null stay accepted, with ints and floats.
        ok = {"m": {"steps": [1, 2, 3, 4, 5], "values": [1, 2.5, None, "nan", "-inf"]}}
        r = c.post(f"/api/runs/{sdk_id}/metrics", json={"series": ok})
        assert r.status_code == 200 and r.json()["accepted"] == 5, r.text
        got = c.get(f"/api/runs/{sdk_id}/metrics", params={"names": "m"}).json()["metrics"]["m"]
        assert got["steps"] == [1, 2, 3, 4, 5] and got["values"][:2] == [1.0, 2.5]


def test_query_numbers_past_the_id_columns(any_server: ServerProc) -> None:
    # Found by tests/test_openapi.py on PostgreSQL: cursors compared with 32-bit id columns.
    with any_server.client() as c:
        for since in (str(MAX_ID + 1), str(10**20), f"2025-01-01T00:00:00Z~{10**20}"):
            r = c.get("/api/alerts", params={"since": since})
            assert r.status_code == 200 and r.json()["alerts"] == [], r.text
        assert c.get("/api/alerts", params={"since": "²"}).status_code == 422
        job_id, _ = _setup(c)
        r = c.get(f"/api/runs/{job_id}/notifications", params={"before": MAX_ID + 1})
        assert r.status_code == 422, r.text
        assert c.get("/api/notifications", params={"before": MAX_ID}).status_code == 200
    assert "Traceback" not in any_server.log(None), any_server.log()
