"""Every point of every metric of a run, without downsampling: `ganscope export` and the run page's
download buttons (`GET /api/runs/{id}/export`) write the same bytes through `csv_text` and `json_text`.

The CLI reads over HTTP. The metrics route downsamples to max_points per series; a series holds at
most one point per step, so a window of W consecutive steps never holds more than W points: asking
window by window with max_points=W returns each point exactly once. The server reads its store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from ganscope.client import Api

WINDOW = 100_000  # steps per request (and max_points): bounded answers, few round trips
NAMES_PER_REQUEST = 8  # with WINDOW, at most 800k points per answer; short query strings
RUN_FIELDS = ("id", "name", "status", "health", "step", "total_steps", "config")
# (name, steps, values) with None for a non-finite value, names in sorted order.
Series = tuple[str, list[int], list[float | None]]


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


def run_header(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run.get(k) for k in RUN_FIELDS}


def json_text(run: dict[str, Any], series: Iterable[Series]) -> Iterator[str]:
    """{"run": {...}, "metrics": {name: {"steps", "values"}}} in pieces, one metric at a time.
    null stands for a non-finite value, as everywhere in ganscope's JSON (bare NaN is invalid JSON)."""
    yield '{"run": ' + json.dumps(run_header(run), allow_nan=False) + ', "metrics": {'
    for i, (name, steps, values) in enumerate(series):
        body = json.dumps({"steps": steps, "values": values}, allow_nan=False)
        yield ("" if i == 0 else ", ") + json.dumps(name) + ": " + body
    yield "}}\n"


def csv_text(series: Iterable[Series]) -> Iterator[str]:
    """Long ("tidy") rows: metric,step,value. Metrics are logged at different steps, so a wide table
    would be mostly empty cells; pandas' pivot turns this into one anyway. Non-finite: `nan`."""
    yield "metric,step,value\r\n"
    for name, steps, values in series:
        cell = _csv_cell(name)
        yield "".join(f"{cell},{step},{_csv_value(v)}\r\n" for step, v in zip(steps, values))


def _csv_cell(text: str) -> str:
    # The csv module's minimal quoting, for the one free-text column.
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


def _csv_value(v: float | None) -> str:
    return "nan" if v is None or not math.isfinite(v) else repr(float(v))


def _from_dict(metrics: dict[str, dict[str, list]]) -> Iterator[Series]:
    for name in sorted(metrics):
        yield name, metrics[name]["steps"], metrics[name]["values"]


def write_json(run: dict[str, Any], metrics: dict[str, dict[str, list]], out: TextIO) -> None:
    for piece in json_text(run, _from_dict(metrics)):
        out.write(piece)


def write_csv(run: dict[str, Any], metrics: dict[str, dict[str, list]], out: TextIO) -> None:
    for piece in csv_text(_from_dict(metrics)):
        out.write(piece)
