"""The sink's control answer stops a run cleanly: checkpoint, flush, status; checkpoint cadence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.jobs import tiny_image_job
from ganscope.trainer import checkpoint as ckpt_io
from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import KEEP_CHECKPOINTS, train
from ganscope.trainer.sink import MemorySink

torch.set_num_threads(1)


def _img(**kw) -> JobConfig:
    return tiny_image_job(**{**dict(steps=30, flush_every=4), **kw})


@pytest.mark.parametrize("action,status", [("cancel", "cancelled"), ("stop", "stopped"), ("handback", "handback")])
def test_control_stops_with_a_checkpoint_and_all_metrics(tmp_path: Path, action: str, status: str) -> None:
    sink = MemorySink(control_after=(8, action))
    result = train(_img(), sink, tmp_path)
    assert (result.status, result.step) == (status, 8)
    assert action in (result.reason or "")
    assert sink.checkpoints[-1][0] == 8 and sink.checkpoints[-1][1].exists()
    assert ckpt_io.load(sink.checkpoints[-1][1])["step"] == 8
    assert sink.series("loss/d")[0] == list(range(1, 9))         # nothing measured is lost


def test_control_before_the_first_step(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.set_control("cancel")
    result = train(_img(), sink, tmp_path)
    assert (result.status, result.step) == ("cancelled", 0)
    assert "loss/d" not in sink.metrics


def test_an_unknown_control_answer_is_an_error(tmp_path: Path) -> None:
    class Odd(MemorySink):
        def control(self) -> str | None:
            return "pause"

    with pytest.raises(ValueError, match="pause"):
        train(_img(steps=2), Odd(), tmp_path)


class _Watching(MemorySink):
    """Notes the last metric step the sink had when each checkpoint arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_at_checkpoint: list[int] = []

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.seen_at_checkpoint.append(self.last_step())
        super().on_checkpoint(step, path)


def test_checkpoints_every_k_steps_and_at_the_end_keeping_the_newest(tmp_path: Path) -> None:
    sink = _Watching()
    train(_img(steps=11, checkpoint_every=2), sink, tmp_path)
    assert [s for s, _ in sink.checkpoints] == [2, 4, 6, 8, 10, 11]
    on_disk = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert on_disk == [p.name for _, p in sink.checkpoints[-KEEP_CHECKPOINTS:]]
    # Metrics up to a checkpoint reach the sink before it: a crash after it loses no point.
    assert sink.seen_at_checkpoint == [2, 4, 6, 8, 10, 11]
    ckpt = ckpt_io.load(sink.checkpoints[-1][1])
    assert set(ckpt) >= {"g", "d", "opt_g", "opt_d", "rng", "config", "fixed_z", "step"}
    assert ckpt["config"]["steps"] == 11


def test_memory_sink_rejects_bad_control_values() -> None:
    with pytest.raises(ValueError):
        MemorySink(control_after=(3, "pause"))
    with pytest.raises(ValueError):
        MemorySink().set_control("later")
