"""Tiny job configs for in-process trainer tests: seconds on one CPU thread."""

from __future__ import annotations

from typing import Any

from ganscope.trainer.config import JobConfig

# 16px shapes, narrow nets, nothing flushed, sampled or checkpointed unless a test asks for it.
TINY_IMAGE: dict[str, Any] = dict(dataset="shapes", image_size=16, ngf=8, ndf=8, nz=16, batch_size=16, steps=6,
                                  flush_every=100, flush_seconds=3600, sample_every=1000, checkpoint_every=1000,
                                  device="cpu")


def tiny_image_job(**overrides: Any) -> JobConfig:
    return JobConfig(**{**TINY_IMAGE, **overrides})
