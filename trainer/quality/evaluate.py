"""The periodic image-quality evaluation the training loop calls (`QualityEval.maybe_report`).

Every `eval_every` steps on an image set: `eval_samples` images from the sampling G (`eval_generator()`, the
EMA with `ema_g` on) against as many real images drawn once, both through the feature extractor, giving
`quality/kid`, `quality/fid`, `quality/precision`, `quality/recall`, `quality/coverage`, on `shapes` also
`quality/recognisable`, `quality/modes`, `quality/modes_total`, and `perf/eval_s` (the evaluation's seconds).
A "quality" snapshot at each evaluation records the extractor (figures from the offline ones are not comparable
with published FID) and the real images' own recognisable share (the ceiling G is judged against).

Samples come from their own generators (seeded from the run seed and the step), so evaluating never changes
what training draws; the loop counts the time as side time, outside `perf/step_s`.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import torch

from ganscope.trainer.config import JobConfig
from ganscope.trainer.models import z_shape
from ganscope.trainer.quality.features import ENV, Extractor, build_extractor
from ganscope.trainer.quality.metrics import kid_fid, prc
from ganscope.trainer.samples import generate

if TYPE_CHECKING:
    from ganscope.trainer.loop import Trainer

_REAL_SALT, _Z_SALT = 7_919, 104_729  # per-purpose streams apart from the loop's


def _features(ext: Extractor, x: torch.Tensor, device: torch.device, chunk: int = 128) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([ext(x[i:i + chunk].to(device)).float().cpu() for i in range(0, x.shape[0], chunk)])


class QualityEval:
    """Built with the trainer: a bad GANSCOPE_INCEPTION_WEIGHTS fails the job at once, not at the first
    evaluation. The offline extractors (the shapes classifier may need training) and the real features are
    made at the first evaluation, so a run shorter than `eval_every` never pays for them."""

    def __init__(self, cfg: JobConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self._extractor: Extractor | None = None
        if os.environ.get(ENV, "").strip():
            self._extractor = build_extractor(cfg.dataset, cfg.image_size).to(device).eval()
        self.judge: Any = None
        if cfg.dataset == "shapes":
            from ganscope.trainer.quality import shapes_clf

            self.judge = shapes_clf
        self._real: torch.Tensor | None = None
        self._real_info: dict[str, float] = {}

    @property
    def extractor(self) -> Extractor:
        if self._extractor is None:
            self._extractor = build_extractor(self.cfg.dataset, self.cfg.image_size).to(self.device).eval()
        return self._extractor

    def due(self, step: int) -> bool:
        """At every multiple of `eval_every` past step 0 (an untrained G's figures say nothing; the detectors
        ignore evaluations before their warm-up anyway)."""
        every = self.cfg.eval_every
        return every > 0 and step > 0 and step % every == 0

    def maybe_report(self, trainer: Trainer) -> None:
        if self.due(trainer.state.step):
            self.report(trainer)

    def _real_features(self, trainer: Trainer) -> torch.Tensor:
        if self._real is None:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + _REAL_SALT)
            real = trainer.data.batch(self.cfg.eval_samples, gen)
            self._real = _features(self.extractor, real, self.device)
            if self.judge is not None:
                self._real_info = {f"real_{k}": v for k, v in self.judge.judge(self._clf(), real).items()}
        return self._real

    def _clf(self) -> Any:
        return self.judge.load_classifier()

    def measure(self, trainer: Trainer) -> dict[str, float]:
        """The quality/* values at the trainer's current step (no perf/eval_s)."""
        cfg, step = self.cfg, trainer.state.step
        real = self._real_features(trainer)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + _Z_SALT + step)
        z = torch.randn(z_shape(cfg, cfg.eval_samples), generator=gen).to(self.device)
        fake_img = generate(trainer.eval_generator(), z, chunk=max(cfg.batch_size, 64)).cpu()
        fake_img = torch.nan_to_num(fake_img, nan=0.0, posinf=1.0, neginf=-1.0)  # a diverged G scores, not raises
        fake = _features(self.extractor, fake_img, self.device)
        kid, fid = kid_fid(real, fake)
        out = {"quality/kid": kid, "quality/fid": fid, **{f"quality/{k}": v for k, v in prc(real, fake).items()}}
        if self.judge is not None:
            out.update({f"quality/{k}": v for k, v in self.judge.judge(self._clf(), fake_img).items()})
        return out

    def report(self, trainer: Trainer) -> None:
        t0 = time.perf_counter()
        values = self.measure(trainer)
        step = trainer.state.step
        values["perf/eval_s"] = time.perf_counter() - t0
        for name, v in values.items():
            trainer.buffer.record_host(name, step, v)
        trainer.sink.on_snapshot(step, "quality", {
            "extractor": self.extractor.name, "comparable_with_published": False, "samples": self.cfg.eval_samples,
            "values": values, **self._real_info,
        })


_EXTRACTORS: dict[tuple[str, int, str], Extractor] = {}


def measure_batches(fake: torch.Tensor, real: torch.Tensor, *, value_range: tuple[float, float] = (-1.0, 1.0),
                    dataset: str | None = None) -> dict[str, float]:
    """The SDK's `log_quality`: the same measures as the trainer's evaluation, from the user's own batches.

    Points (N,) / (N, 1) / (N, 2) give `toy/fit`; images (N, C, H, W) in `value_range` give `quality/kid`, `fid`,
    `precision`, `recall`, `coverage` (with `dataset="shapes"` also `recognisable`, `modes`, `modes_total`) through
    the same extractor choice (GANSCOPE_INCEPTION_WEIGHTS, else the offline one), and `perf/eval_s`."""
    t0 = time.perf_counter()
    fake = torch.as_tensor(fake).detach().float().cpu()
    real = torch.as_tensor(real).detach().float().cpu()
    if fake.dim() <= 2:
        from ganscope.trainer.quality.toyfit import toy_fit

        return {"toy/fit": toy_fit(real, fake), "perf/eval_s": time.perf_counter() - t0}
    if fake.dim() != 4 or real.dim() != 4 or fake.shape[1:] != real.shape[1:]:
        raise ValueError(f"log_quality takes two image batches (N, C, H, W) of one shape, or 1-D/2-D points; "
                         f"got {tuple(fake.shape)} and {tuple(real.shape)}")
    lo, hi = value_range
    fake, real = ((x - lo) / (hi - lo) * 2 - 1 for x in (fake, real))
    fake = torch.nan_to_num(fake, nan=0.0, posinf=1.0, neginf=-1.0)
    ds = dataset if dataset == "shapes" and fake.shape[1] == 3 else "other"
    key = (ds, int(fake.shape[-1]), os.environ.get(ENV, ""))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = build_extractor(ds, int(fake.shape[-1])).eval()
    ext = _EXTRACTORS[key]
    ff, rf = _features(ext, fake, torch.device("cpu")), _features(ext, real, torch.device("cpu"))
    kid, fid = kid_fid(rf, ff)
    out = {"quality/kid": kid, "quality/fid": fid, **{f"quality/{k}": v for k, v in prc(rf, ff).items()}}
    if ds == "shapes":
        from ganscope.trainer.quality import shapes_clf

        out.update({f"quality/{k}": v for k, v in
                    shapes_clf.judge(shapes_clf.load_classifier(), fake).items()})
    out["perf/eval_s"] = time.perf_counter() - t0
    return out
