"""Where the training loop reports: the `Sink` protocol and an in-memory sink.

The loop knows nothing of HTTP or SQL (issue 2, "Cost"): it hands batched metric
series, PNG samples, toy snapshots and checkpoint paths to a sink, and asks the
sink between steps whether to go on. The worker's sink forwards to the server;
`MemorySink` keeps everything in memory for tests, benchmarks and the detector
corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

CONTROL_VALUES = ("cancel", "stop", "handback")


class Sink(Protocol):
    def on_metrics(self, series: dict[str, tuple[list[int], list[float]]]) -> None:
        """name -> (steps, values); values are Python floats, NaN/Inf kept as such."""

    def on_sample(self, step: int, kind: str, png: bytes) -> None:
        """kind "grid" (fixed z), "interp" or "walk"."""

    def on_snapshot(self, step: int, kind: str, payload: dict) -> None:
        """kind "toy": the density payload of docs/contracts.md."""

    def on_checkpoint(self, step: int, path: Path) -> None: ...

    def control(self) -> str | None:
        """None to go on, or "cancel" / "stop" / "handback"; polled between steps."""


@dataclass
class Sample:
    step: int
    kind: str
    png: bytes


@dataclass
class Snapshot:
    step: int
    kind: str
    payload: dict[str, Any]


@dataclass
class MemorySink:
    """Collects everything the loop reports.

    `control_after=(n, "cancel")` makes `control()` answer "cancel" once metrics up to
    step n have been reported: the loop only learns of a step through `on_metrics`, so
    that is the sink's clock (the loop polls right after each flush).
    """

    control_after: tuple[int, str] | None = None
    metrics: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)
    flushes: int = 0
    control_polls: int = 0
    _control: str | None = None

    def __post_init__(self) -> None:
        if self.control_after is not None and self.control_after[1] not in CONTROL_VALUES:
            raise ValueError(f"control value must be one of {CONTROL_VALUES}, got {self.control_after[1]!r}")

    # --- Sink ---------------------------------------------------------------
    def on_metrics(self, series: dict[str, tuple[list[int], list[float]]]) -> None:
        self.flushes += 1
        for name, (steps, values) in series.items():
            if len(steps) != len(values):
                raise ValueError(f"series {name}: {len(steps)} steps but {len(values)} values")
            s, v = self.metrics.setdefault(name, ([], []))
            s.extend(int(x) for x in steps)
            v.extend(float(x) for x in values)

    def on_sample(self, step: int, kind: str, png: bytes) -> None:
        self.samples.append(Sample(step, kind, png))

    def on_snapshot(self, step: int, kind: str, payload: dict) -> None:
        self.snapshots.append(Snapshot(step, kind, payload))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, Path(path)))

    def control(self) -> str | None:
        self.control_polls += 1
        if self._control is not None:
            return self._control
        if self.control_after is not None and self.last_step() >= self.control_after[0]:
            return self.control_after[1]
        return None

    # --- helpers for tests and benches ------------------------------------------
    def set_control(self, value: str | None) -> None:
        if value is not None and value not in CONTROL_VALUES:
            raise ValueError(f"control value must be one of {CONTROL_VALUES} or None, got {value!r}")
        self._control = value

    def names(self) -> list[str]:
        return sorted(self.metrics)

    def series(self, name: str) -> tuple[list[int], list[float]]:
        if name not in self.metrics:
            raise KeyError(f"no metric {name!r}; have {', '.join(self.names()) or 'none'}")
        return self.metrics[name]

    def values(self, name: str) -> list[float]:
        return self.series(name)[1]

    def last(self, name: str) -> float:
        return self.series(name)[1][-1]

    def last_step(self) -> int:
        return max((s[-1] for s, _ in self.metrics.values() if s), default=-1)

    def samples_of(self, kind: str) -> list[Sample]:
        return [s for s in self.samples if s.kind == kind]
