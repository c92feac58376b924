"""Server-side downsampling that never hides a spike, a drop to zero or a NaN (pure numpy).

A series longer than max_points is cut into equal-count buckets; each bucket keeps its
first, last, smallest and largest finite point, and every non-finite point is kept
besides. Averaging (what ClearML does) would turn a one-step collapse to 0 into a
barely visible dip; min/max keeps it at its true height.
"""

from __future__ import annotations

from typing import Any

import numpy as np


_EMPTY = np.zeros(0, dtype=np.int64)


def _nonfinite_keep(finite: np.ndarray, budget: int) -> np.ndarray:
    """Indices of the non-finite points to keep: all of them while they fit in budget, else the first and
    last of every unbroken stretch of them (and, past that, an even subset of those)."""
    bad = np.flatnonzero(~finite)
    if bad.size <= budget:
        return bad
    prev_ok = np.concatenate(([True], finite[:-1]))
    next_ok = np.concatenate((finite[1:], [True]))
    edges = np.flatnonzero(~finite & (prev_ok | next_ok))
    if edges.size > budget:
        edges = np.unique(edges[np.linspace(0, edges.size - 1, max(budget, 1)).astype(np.int64)])
    return edges


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most max_points points of (steps, values), ordered by step, extremes and non-finite kept."""
    n = int(steps.size)
    if n <= max_points:
        return steps, values
    if max_points < 4:
        idx = np.unique(np.linspace(0, n - 1, max(max_points, 1)).astype(np.int64))
        return steps[idx], values[idx]
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    keep_bad = _EMPTY if all_finite else _nonfinite_keep(finite, max_points // 2)
    buckets = max(1, (max_points - keep_bad.size) // 4)
    width = -(-n // buckets)  # ceil: the last bucket may be short
    full = n // width  # whole buckets; a short one may follow
    # Non-finite points must not win min/max: mask them to +/-inf (skipped when there are none).
    lo = values if all_finite else np.where(finite, values, np.inf)
    hi = values if all_finite else np.where(finite, values, -np.inf)
    starts = np.arange(full, dtype=np.int64) * width
    # A bucket with no finite point yields offset 0 (its first point, non-finite and kept anyway).
    arg_lo = starts + np.argmin(lo[:full * width].reshape(full, width), axis=1)
    arg_hi = starts + np.argmax(hi[:full * width].reshape(full, width), axis=1)
    ends = starts + width - 1
    if full * width < n:
        tail = full * width
        starts = np.append(starts, tail)
        ends = np.append(ends, n - 1)
        arg_lo = np.append(arg_lo, tail + int(np.argmin(lo[tail:])))
        arg_hi = np.append(arg_hi, tail + int(np.argmax(hi[tail:])))
    idx = np.unique(np.concatenate((starts, ends, arg_lo, arg_hi, keep_bad)))
    return steps[idx], values[idx]


def to_json(steps: np.ndarray, values: np.ndarray) -> dict[str, list[Any]]:
    """{"steps": [...], "values": [...]} with null for every non-finite value (JSON has no NaN/Infinity)."""
    vals: list[Any] = values.tolist()
    bad = np.flatnonzero(~np.isfinite(values))
    for i in bad.tolist():
        vals[i] = None
    return {"steps": steps.tolist(), "values": vals}


def select_range(steps: np.ndarray, values: np.ndarray, since_step: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Points after since_step (live updates ask only for what they have not drawn yet)."""
    if since_step is None:
        return steps, values
    i = int(np.searchsorted(steps, since_step, side="right"))
    return steps[i:], values[i:]
