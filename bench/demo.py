"""Does `ganscope up`'s demo visibly learn? The real `ganscope up` (server, two workers, both demo runs) on a fresh
home for `--minutes` (5), read through the API as the dashboard reads it.

At 1, 3 and 5 minutes (and the end) it prints, for each demo run, its step and status and the last
`quality/recognisable` and `quality/modes` / `quality/modes_total`; and when the failing run's first alert opened
(seconds since `up` started). The shapes classifier is trained beforehand (or read from the cache), as it is
once per user: a first `make up` on a fresh machine spends that time once, in the first evaluation.

    python -m bench.demo [--minutes 5]

Last line: ``demo_5min_recognisable <fraction> coverage <n>/<classes> failing_flagged_s <seconds>`` (the healthy
run's last recognisable share and modes count; `none` when the failing run was never flagged).
Targets on a 2-core CPU: recognisable >= 0.5 with coverage rising, failing flagged within 120 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ganscope.trainer.quality.shapes_clf import load_classifier  # noqa: E402
from ganscope.up import DEMO_FAILING_NAME, DEMO_NAME, port_free  # noqa: E402


def last(c: httpx.Client, run_id: int, name: str) -> float | None:
    m = c.get(f"/api/runs/{run_id}/metrics", params={"names": name}).json()["metrics"].get(name)
    return m["values"][-1] if m and m["values"] else None


def report(c: httpx.Client, ids: dict[str, int], t0: float, label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rid in ids.items():
        run = c.get(f"/api/runs/{rid}").json()
        rec, modes, total = (last(c, rid, n) for n in ("quality/recognisable", "quality/modes", "quality/modes_total"))
        out[name] = {"step": run["step"], "recognisable": rec, "modes": modes, "total": total}
        print(f"[{label} {time.monotonic() - t0:5.0f}s] {name}: {run['status']} step {run['step']}, recognisable "
              f"{rec if rec is None else round(rec, 3)}, modes {modes}/{total}, learning "
              f"{(run.get('learning') or {}).get('verdict')}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    args = ap.parse_args()
    load_classifier()  # once per user, outside the timed window
    port = next(p for p in range(18500, 18600) if port_free("127.0.0.1", p))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("GANSCOPE_HOME", None)
        proc = subprocess.Popen([sys.executable, "-m", "ganscope", "up", "--home", tmp, "--port", str(port),
                                 "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        t0 = time.monotonic()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                print("up:", line.rstrip(), flush=True)
                if line.startswith("Press Ctrl-C"):
                    break
            c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            ids = {r["name"]: int(r["id"]) for r in c.get("/api/runs").json()["runs"]}
            flagged: float | None = None
            marks = [m for m in (1, 3, 5) if m <= args.minutes] + [args.minutes]
            snap: dict[str, Any] = {}
            for mark in sorted(set(marks)):
                while time.monotonic() - t0 < mark * 60:
                    if flagged is None and c.get(f"/api/runs/{ids[DEMO_FAILING_NAME]}/alerts").json()["alerts"]:
                        flagged = time.monotonic() - t0
                        alerts = c.get(f"/api/runs/{ids[DEMO_FAILING_NAME]}/alerts").json()["alerts"]
                        print(f"failing run flagged at {flagged:.0f}s: {[a['signature'] for a in alerts]}", flush=True)
                    time.sleep(2)
                snap = report(c, ids, t0, f"{mark:g} min")
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    h = snap.get(DEMO_NAME, {})
    rec = h.get("recognisable")
    cov = f"{h.get('modes') or 0:.0f}/{h.get('total') or 12:.0f}"
    print(f"demo_5min_recognisable {rec if rec is not None else 'none'} coverage {cov} "
          f"failing_flagged_s {f'{flagged:.0f}' if flagged is not None else 'none'}")


if __name__ == "__main__":
    main()
