"""`ganscope export`: every point of every metric of a run, without downsampling.

The metrics route downsamples to max_points per series. A series holds at most
one point per step, so a window of W consecutive steps never holds more than W
points: asking window by window with max_points=W returns each point exactly once.
"""

from __future__ import annotations

import csv
import json
import math
from typing import Any, TextIO

from ganscope.client import Api

WINDOW = 100_000  # steps per request (and max_points): bounded answers, few round trips
NAMES_PER_REQUEST = 8  # with WINDOW, at most 800k points per answer; short query strings


def fetch_all(api: Api, run_id: int) -> tuple[dict[str, Any], dict[str, dict[str, list]]]:
    run = api.get(f"/api/runs/{run_id}")
    names: list[str] = sorted(run.get("metric_names") or [])
    last = int(run.get("step") or 0)
    out: dict[str, dict[str, list]] = {n: {"steps": [], "values": []} for n in names}
    for i in range(0, len(names), NAMES_PER_REQUEST):
        group = names[i:i + NAMES_PER_REQUEST]
        start = 0
        while start <= last:
            end = start + WINDOW - 1
            got = api.get(f"/api/runs/{run_id}/metrics",
                          params={"names": ",".join(group), "max_points": WINDOW, "start": start, "end": end})
            for name, series in got.get("metrics", {}).items():
                if name in out:
                    out[name]["steps"].extend(series["steps"])
                    out[name]["values"].extend(series["values"])
            start = end + 1
    return run, out


def write_json(run: dict[str, Any], metrics: dict[str, dict[str, list]], out: TextIO) -> None:
    # null stands for a non-finite value, as everywhere in ganscope's JSON (bare NaN is invalid JSON).
    summary = {k: run.get(k) for k in ("id", "name", "status", "health", "step", "total_steps", "config")}
    json.dump({"run": summary, "metrics": metrics}, out, allow_nan=False)
    out.write("\n")


def write_csv(run: dict[str, Any], metrics: dict[str, dict[str, list]], out: TextIO) -> None:
    """Long ("tidy") rows: metric,step,value. Metrics are logged at different steps, so a wide table
    would be mostly empty cells; pandas' pivot turns this into one anyway. Non-finite: `nan`."""
    w = csv.writer(out)
    w.writerow(["metric", "step", "value"])
    for name, series in metrics.items():
        for step, value in zip(series["steps"], series["values"]):
            w.writerow([name, step, "nan" if value is None or not math.isfinite(value) else repr(float(value))])
