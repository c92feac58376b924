"""Security: bearer token on every state-changing route, loopback by default, size limits, confined paths.

Everything runs against the real server (uvicorn in a subprocess) over HTTP.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import REPO, ServerProc, base_env, free_port, start_server, wait_for

TOKEN = "s3cret-token-for-tests"
CHANGING = ("post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    # One server for the module: these tests only add runs, and each looks at its own.
    s = start_server(tmp_path_factory.mktemp("secured"), token=TOKEN)
    yield s
    s.stop()


def _job(client: httpx.Client, **cfg) -> int:
    resp = client.post("/api/jobs", json={"name": "sec", "dataset": "ring8", "steps": 10, **cfg})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _fill(path: str, run_id: int) -> str:
    # Real ids where the route has them, so a right token reaches the handler (not a 404 for the id).
    return re.sub(r"\{(\w+)\}", lambda m: str(run_id) if m.group(1) == "run_id" else "1", path)


def _changing_routes(spec: dict) -> list[tuple[str, str]]:
    return sorted((m, p) for p, ops in spec["paths"].items() for m in ops if m in CHANGING)


def test_every_state_changing_route_needs_the_token(secured: ServerProc) -> None:
    spec = httpx.get(secured.url + "/openapi.json").json()
    routes = _changing_routes(spec)
    # The contract's state-changing calls must all be in the schema we enumerate (so none escapes the loop).
    must = {("post", "/api/jobs"), ("post", "/api/runs/{run_id}/cancel"), ("post", "/api/workers/claim"),
            ("post", "/api/workers/heartbeat"), ("post", "/api/runs/{run_id}/metrics"),
            ("post", "/api/runs/{run_id}/samples"), ("post", "/api/runs/{run_id}/snapshots"),
            ("put", "/api/runs/{run_id}/checkpoints/{step}"), ("post", "/api/runs/{run_id}/finish"),
            ("post", "/api/runs")}
    assert must <= set(routes), f"missing from OpenAPI: {must - set(routes)}"
    with secured.client(TOKEN) as authed:
        run_id = _job(authed)
    bad_headers = {"missing": {}, "wrong": {"Authorization": "Bearer not-the-token"},
                   "prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
                   "scheme": {"Authorization": f"Basic {TOKEN}"}, "bare": {"Authorization": TOKEN}}

    def state() -> tuple[list, object]:
        runs = httpx.get(secured.url + "/api/runs").json()
        runs = runs.get("runs", runs) if isinstance(runs, dict) else runs
        return sorted((r["id"], r["status"], r["step"]) for r in runs), httpx.get(secured.url + "/api/workers").json()

    before = state()
    assert (run_id, "queued", 0) in before[0]
    for method, path in routes:
        url = secured.url + _fill(path, run_id)
        for label, headers in bad_headers.items():
            r = httpx.request(method, url, json={}, headers=headers, params={"step": 1})
            assert r.status_code == 401, f"{method.upper()} {path} with {label} token: {r.status_code} {r.text}"
            assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
            assert "token" in r.json()["detail"]
    # Nothing the refused calls asked for happened: no run added, cancelled or advanced, no worker known.
    assert state() == before
    for method, path in routes:
        r = httpx.request(method, secured.url + _fill(path, run_id), json={}, params={"step": 1},
                          headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code != 401, f"{method.upper()} {path} refused the right token: {r.text}"
        assert r.status_code < 500, f"{method.upper()} {path}: {r.status_code} {r.text}"


def test_reads_stay_open_with_a_token_set(secured: ServerProc) -> None:
    with secured.client(TOKEN) as authed:
        run_id = _job(authed)
    spec = httpx.get(secured.url + "/openapi.json").json()
    gets = [p for p, ops in spec["paths"].items() if "get" in ops and not p.endswith("/stream")]
    assert "/api/runs" in gets and "/api/runs/{run_id}" in gets
    for path in gets:
        r = httpx.get(secured.url + _fill(path, run_id))
        assert r.status_code != 401, f"GET {path} wants a token: reads are open"
    assert httpx.get(f"{secured.url}/api/runs/{run_id}").json()["name"] == "sec"
    assert httpx.get(secured.url + "/").status_code == 200


def test_token_in_the_wrong_place_is_not_accepted(secured: ServerProc) -> None:
    # Only the Authorization header counts: a token in the query string would end up in access logs.
    r = httpx.post(secured.url + "/api/jobs", params={"token": TOKEN}, json={"dataset": "ring8"})
    assert r.status_code == 401


def _listen_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on the port, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:
                if len(addr) == 8:  # IPv4, little-endian
                    found.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add(addr)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
def test_serve_binds_loopback_unless_told(home: Path) -> None:
    port = free_port()
    env = base_env(home)
    proc = subprocess.Popen([sys.executable, "-m", "ganscope", "serve", "--port", str(port), "--home", str(home)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200,
                 timeout=60, what="ganscope serve")
        assert _listen_addresses(port) == {"127.0.0.1"}
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = start_server(tmp_path_factory.mktemp("limited"), token=TOKEN,
                     GANSCOPE_MAX_REQUEST_MB="0.01", GANSCOPE_MAX_UPLOAD_MB="0.05",
                     GANSCOPE_MAX_BATCH_SIZE="64", GANSCOPE_MAX_IMAGE_SIZE="32", GANSCOPE_MAX_STEPS="1000")
    yield s
    s.stop()


def _chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    # A generator body: httpx sends it chunked, with no Content-Length for the server to check up front.
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b" " * n


def test_request_size_limits(limited: ServerProc) -> None:
    big_json = b'{"name": "x", "pad": "' + b"a" * 20_000 + b'"}'  # ~20 KB > 0.01 MiB
    with limited.client(TOKEN) as c:
        for path in ("/api/jobs", "/api/workers/claim", "/api/runs/1/metrics"):
            r = c.post(path, content=big_json, headers={"Content-Type": "application/json"})
            assert r.status_code == 413, f"{path}: {r.status_code} {r.text}"
            assert "GANSCOPE_MAX_REQUEST_MB" in r.json()["detail"] or "limit" in r.json()["detail"]
        for path in ("/api/jobs", "/api/workers/claim"):
            r = c.post(path, content=_chunks(20_000), headers={"Content-Type": "application/json"})
            assert r.status_code == 413, f"{path}: {r.status_code} {r.text}"
            assert "limit" in r.json()["detail"]
        # A small JSON body still passes, so the 413s above are about size.
        run_id = _job(c, batch_size=32)
        # Uploads get their own, larger cap: 30 KB is over the JSON cap but within the upload cap.
        r = c.put(f"/api/runs/{run_id}/checkpoints/5", content=b"\0" * 30_000,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        r = c.put(f"/api/runs/{run_id}/checkpoints/6", content=b"\0" * 60_000,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 413 and "GANSCOPE_MAX_UPLOAD_MB" in r.json()["detail"], r.text
        r = c.put(f"/api/runs/{run_id}/checkpoints/7", content=_chunks(60_000),
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 413, r.text
        # The refused uploads stored nothing: the latest checkpoint is still the 30 KB one at step 5.
        latest = c.get(f"/api/runs/{run_id}/checkpoints/latest")
        assert latest.status_code == 200 and latest.headers["x-ganscope-step"] == "5"
        assert len(latest.content) == 30_000
        # Calling a body an image does not buy the upload cap on a JSON route.
        r = c.post("/api/jobs", content=b"\x89PNG" + b"a" * 20_000, headers={"Content-Type": "image/png"})
        assert r.status_code == 413


def test_job_size_limits_are_enforced(limited: ServerProc) -> None:
    with limited.client(TOKEN) as c:
        r = c.post("/api/jobs", json={"dataset": "shapes", "batch_size": 128, "image_size": 64, "steps": 5000})
        assert r.status_code == 422, r.text
        errors = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
        assert set(errors) == {("body", "batch_size"), ("body", "image_size"), ("body", "steps")}
        assert "64" in errors[("body", "batch_size")] and "1000" in errors[("body", "steps")]
        r = c.post("/api/jobs", json={"dataset": "shapes", "batch_size": 64, "image_size": 32, "steps": 1000})
        assert r.status_code == 201, r.text
        # A toy job has no image size: the image cap does not apply to it.
        assert c.post("/api/jobs", json={"dataset": "ring8", "steps": 10, "batch_size": 64}).status_code == 201


def test_dataset_paths_cannot_leave_the_data_root(secured: ServerProc) -> None:
    with secured.client(TOKEN) as c:
        for data_root in ("../etc", "mnist/../../secret", "..", "a\\..\\..\\b", "x/\x00/y"):
            r = c.post("/api/jobs", json={"dataset": "folder", "data_root": data_root, "steps": 10})
            assert r.status_code == 422, f"{data_root!r}: {r.status_code} {r.text}"
            assert any(e["loc"][-1] == "data_root" for e in r.json()["detail"]), r.text
        # A path inside the root is fine (the worker resolves it under its dataset root).
        r = c.post("/api/jobs", json={"dataset": "folder", "data_root": "faces/train", "steps": 10})
        assert r.status_code == 201, r.text


def test_artifact_names_cannot_traverse(secured: ServerProc) -> None:
    with secured.client(TOKEN) as c:
        run_id = _job(c)
        png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
        for kind in ("../../x", "..", "a/b", "A B"):
            r = c.post(f"/api/runs/{run_id}/samples", params={"step": 1, "kind": kind}, content=png,
                       headers={"Content-Type": "image/png"})
            assert r.status_code in (404, 422), f"kind {kind!r}: {r.status_code} {r.text}"
    secret = "root:"  # /etc/passwd's first field; pyproject's first line for the repo
    for path in ("/static/..%2f..%2fpyproject.toml", "/static/%2e%2e/%2e%2e/etc/passwd",
                 f"/api/runs/{run_id}/samples/..%2f..%2f..%2fetc/1.png", "/static/../../etc/passwd"):
        r = httpx.get(secured.url + path)
        assert r.status_code in (400, 404, 422), f"{path}: {r.status_code}"
        assert secret not in r.text and "[build-system]" not in r.text


# --- cross-site requests (server/security.py): safe with no token, the `make up` default ---------------

def _runs(url: str) -> list[tuple[int, str]]:
    body = httpx.get(url + "/api/runs").json()
    body = body.get("runs", body) if isinstance(body, dict) else body
    return sorted((r["id"], r["status"]) for r in body)


def test_host_allow_list_defaults_to_loopback_names(server: ServerProc) -> None:
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost", f"[::1]:{server.port}"):
        assert httpx.get(server.url + "/api/runs", headers={"Host": host}).status_code == 200, host
    # DNS rebinding: a name the attacker controls now resolves to 127.0.0.1; reads and writes are refused.
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example"):
        r = httpx.get(server.url + "/api/runs", headers={"Host": host})
        assert r.status_code == 400 and "GANSCOPE_ALLOWED_HOSTS" in r.json()["detail"], (host, r.text)
        r = httpx.post(server.url + "/api/jobs", json={"dataset": "ring8"}, headers={"Host": host})
        assert r.status_code == 400, host
    assert _runs(server.url) == []


def test_allowed_hosts_setting(home: Path) -> None:
    s = start_server(home, GANSCOPE_ALLOWED_HOSTS="ganscope.lan, 127.0.0.1")
    try:
        assert httpx.get(s.url + "/api/runs", headers={"Host": "ganscope.lan:8000"}).status_code == 200
        assert httpx.get(s.url + "/api/runs").status_code == 200
        assert httpx.get(s.url + "/api/runs", headers={"Host": "localhost"}).status_code == 400
    finally:
        s.stop()


def test_cross_site_state_changes_are_refused(server: ServerProc) -> None:
    url = server.url
    with server.client() as c:
        run_id = _job(c)
    before = _runs(url)
    evil = {"Origin": "http://evil.example"}
    attempts = [
        # What a cross-site <form> or no-cors fetch can send without a preflight: refused by type alone.
        ("post", "/api/jobs", {"content": b'{"dataset": "ring8"}', "headers": {"Content-Type": "text/plain"}}, 415),
        ("post", "/api/runs", {"content": b"name=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
         415),
        ("post", "/api/jobs", {"files": {"f": ("a.json", b"{}")}}, 415),
        # A bodiless cancel carries no content type: the browser's Origin / Sec-Fetch-Site give it away.
        ("post", f"/api/runs/{run_id}/cancel", {"headers": evil}, 403),
        ("post", f"/api/runs/{run_id}/cancel", {"headers": {"Origin": "null"}}, 403),
        ("post", f"/api/runs/{run_id}/cancel", {"headers": {"Sec-Fetch-Site": "cross-site"}}, 403),
        ("post", f"/api/runs/{run_id}/cancel", {"headers": {"Sec-Fetch-Site": "same-site"}}, 403),
        ("post", f"/api/runs/{run_id}/cancel", {"headers": {"Origin": f"http://localhost:{server.port + 1}"}}, 403),
        ("delete", f"/api/runs/{run_id}", {"headers": evil}, 403),
        ("patch", f"/api/runs/{run_id}", {"json": {"name": "pwned"}, "headers": evil}, 403),
        ("post", "/api/jobs", {"json": {"dataset": "ring8"}, "headers": evil}, 403),
    ]
    for method, path, kw, want in attempts:
        r = httpx.request(method, url + path, **kw)
        assert r.status_code == want, f"{method.upper()} {path} {kw}: {r.status_code} {r.text}"
        assert "refused" in r.json()["detail"] or "Content-Type" in r.json()["detail"], r.text
    assert _runs(url) == before
    assert httpx.get(f"{url}/api/runs/{run_id}").json()["name"] == "sec"
    # The dashboard's own calls: same origin (by either loopback name it was opened with), JSON.
    own = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
    r = httpx.patch(f"{url}/api/runs/{run_id}", json={"note": "ok"}, headers=own)
    assert r.status_code == 200, r.text
    r = httpx.post(f"http://localhost:{server.port}/api/runs/{run_id}/cancel",
                   headers={"Origin": f"http://localhost:{server.port}", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text
    # Reads stay open to anyone allowed by Host (cross-origin reads are the browser's CORS business).
    assert httpx.get(f"{url}/api/runs/{run_id}", headers=evil).status_code == 200


ATTACK_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" action="{target}/api/runs" target="sink"><input name="name" value="csrf"></form>
<iframe name="sink"></iframe>
<script>
window.done = (async () => {{
  const t = "{target}";
  const out = [];
  const tries = [
    [t + "/api/jobs", {{method: "POST", mode: "no-cors", body: '{{"dataset": "ring8", "name": "csrf"}}'}}],
    [t + "/api/jobs", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
                       body: '{{"dataset": "ring8", "name": "csrf"}}'}}],
    [t + "/api/runs/{run_id}/cancel", {{method: "POST", mode: "no-cors"}}],
    [t + "/api/runs/{run_id}", {{method: "DELETE"}}],
    [t + "/api/jobs", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                       body: '{{"dataset": "ring8", "name": "csrf"}}'}}],
  ];
  for (const [u, o] of tries) {{
    try {{ const r = await fetch(u, o); out.push(r.type + " " + r.status); }} catch (e) {{ out.push("error"); }}
  }}
  document.getElementById("f").submit();
  await new Promise((ok) => setTimeout(ok, 1000));
  return out;
}})();
</script></body></html>"""


@pytest.mark.browser
def test_csrf_from_another_origin_in_chromium(server: ServerProc) -> None:
    import http.server
    import threading

    from tests.browser import chromium_path, launch_browser

    if chromium_path() is None:
        pytest.skip("no chromium")
    with server.client() as c:
        run_id = _job(c)
    before = _runs(server.url)
    page_html = ATTACK_PAGE.format(target=server.url, run_id=run_id).encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page_html)))
            self.end_headers()
            self.wfile.write(page_html)

        def log_message(self, *args) -> None:  # noqa: ANN002 - quiet
            pass

    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        with launch_browser() as browser:
            page = browser.new_page()
            # Another site (localhost is a different site from 127.0.0.1) the user happens to visit.
            page.goto(f"http://localhost:{attacker.server_address[1]}/")
            results = page.evaluate("window.done")
            page.wait_for_timeout(500)
            page.close()
    finally:
        attacker.shutdown()
    assert len(results) == 5
    assert _runs(server.url) == before, "a cross-site page changed state"
    run = httpx.get(f"{server.url}/api/runs/{run_id}").json()
    assert run["status"] == "queued" and run["name"] == "sec"
