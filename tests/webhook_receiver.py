"""A webhook receiver for the notification tests: a real HTTP server in its own process.

    python -m tests.webhook_receiver --port P --log FILE

Every POST is appended to FILE as one JSON line ({"path", "headers", "body", "time"}) before it is
answered, so a test sees a request even when the answer never comes. What it answers depends on
the path:
    /ok/...              200
    /status/<code>/...   that status, always
    /flaky/<n>/...       500 for the first n requests to this path, then 200
    /retry-after/...     429 with "Retry-After: 1" the first time, then 200
    /hang/...            no answer for an hour (the sender's timeout ends it)
`start_receiver` runs it on a port of its own and waits until it answers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

_seen: Counter[str] = Counter()
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    log_path: Path

    def log_message(self, *_: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # readiness probe of start_receiver
        self._answer(200)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with _lock:
            _seen[self.path] += 1
            n = _seen[self.path]
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"path": self.path, "headers": dict(self.headers.items()),
                                    "body": body.decode("utf-8", "replace"), "time": time.time()}) + "\n")
        parts = self.path.strip("/").split("/")
        if parts[0] == "status":
            self._answer(int(parts[1]))
        elif parts[0] == "flaky":
            self._answer(500 if n <= int(parts[1]) else 200)
        elif parts[0] == "retry-after":
            self._answer(429, {"Retry-After": "1"}) if n == 1 else self._answer(200)
        elif parts[0] == "hang":
            time.sleep(3600)
        else:
            self._answer(200)

    def _answer(self, code: int, headers: dict[str, str] | None = None) -> None:
        payload = b'{"ok": true}' if code < 300 else b'{"error": "receiver says no"}'
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@dataclass
class Receiver:
    port: int
    log_path: Path
    proc: subprocess.Popen

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def requests(self, prefix: str = "") -> list[dict[str, Any]]:
        try:
            lines = self.log_path.read_text().splitlines()
        except OSError:
            return []
        out = [json.loads(x) for x in lines if x.strip()]
        return [r for r in out if r["path"].startswith(prefix)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_receiver(port: int, log_path: Path, timeout: float = 30.0) -> Receiver:
    from tests.harness import REPO

    proc = subprocess.Popen([sys.executable, "-m", "tests.webhook_receiver", "--port", str(port), "--log",
                             str(log_path)], cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"webhook receiver exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return Receiver(port, log_path, proc)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("webhook receiver did not come up")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    opts = p.parse_args()
    Handler.log_path = Path(opts.log)
    server = ThreadingHTTPServer(("127.0.0.1", opts.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
