"""Names other tools give GAN metrics, mapped to ganscope's (docs/metrics.md). Torch-free.

Used by the TensorBoard importer (tags) and the Lightning callback (`self.log` names). A tag is matched
after normalising: lower case, a leading `train/`, `train_` or `training/` and a trailing `_step` or
`/step` (Lightning's suffix) dropped. A user's mapping (YAML {tag: metric, or null to skip}) is matched
first, on the exact tag, then on the normalised one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_ALIASES: dict[str, tuple[str, ...]] = {
    "loss/d": ("loss_d", "loss_d_total", "d_loss", "errd", "lossd", "loss/d", "loss/discriminator",
               "discriminator_loss", "disc_loss", "loss_disc", "d loss", "loss/dis", "dis_loss", "loss_dis"),
    "loss/g": ("loss_g", "g_loss", "errg", "lossg", "loss/g", "loss/generator", "generator_loss", "gen_loss",
               "loss_gen", "g loss", "loss/gen"),
    "loss/d_real": ("errd_real", "d_loss_real", "loss_d_real", "d_real_loss", "loss/d_real", "real_loss"),
    "loss/d_fake": ("errd_fake", "d_loss_fake", "loss_d_fake", "d_fake_loss", "loss/d_fake", "fake_loss"),
    "loss/gp": ("gradient_penalty", "gp", "loss_gp", "loss/gp", "d_gp"),
    # pytorch/examples' DCGAN: D(x), and D(G(z)) before (D_G_z1, on D's step) and after (D_G_z2, G's) D's update.
    "pred/real": ("d(x)", "d_x", "dx", "pred/real", "d_real_prob", "d_out_real"),
    "pred/fake": ("d(g(z))", "d_g_z1", "d_g_z", "dgz", "d_gz", "pred/fake", "d_fake_prob", "d_out_fake"),
    "pred/fake_g": ("d_g_z2", "pred/fake_g"),
    "score/real": ("score/real", "d_real_logit", "critic_real"),
    "score/fake": ("score/fake", "d_fake_logit", "critic_fake"),
    "lr/d": ("lr_d", "lr/d", "lr_disc", "lr/discriminator"),
    "lr/g": ("lr_g", "lr/g", "lr_gen", "lr/generator"),
}
DEFAULTS: dict[str, str] = {alias: metric for metric, aliases in _ALIASES.items() for alias in aliases}
_PREFIX = re.compile(r"^(train|training)[/_]")
_SUFFIX = re.compile(r"[/_]step$")
_BAD = re.compile(r"[\x00-\x1f\x7f*,]")  # what ingest refuses in a metric name


def normalise(tag: str) -> str:
    return _SUFFIX.sub("", _PREFIX.sub("", tag.strip().lower()))


class TagMap:
    """tag -> ganscope metric name; unmapped tags keep their own name (cleaned), or are skipped."""

    def __init__(self, user: Mapping[str, str | None] | None = None, keep_unmapped: bool = True) -> None:
        self.user = dict(user or {})
        self.user_norm = {normalise(k): v for k, v in self.user.items()}
        self.keep_unmapped = keep_unmapped

    @classmethod
    def from_yaml(cls, path: str | Path | None, keep_unmapped: bool = True) -> "TagMap":
        if path is None:
            return cls(keep_unmapped=keep_unmapped)
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                 for k, v in data.items()):
            raise ValueError(f"{path}: expected a mapping of tag: metric name (or null to skip the tag)")
        return cls(data, keep_unmapped)

    def __call__(self, tag: str) -> str | None:
        for table, key in ((self.user, tag), (self.user_norm, normalise(tag))):
            if key in table:
                return table[key]
        mapped = DEFAULTS.get(normalise(tag))
        if mapped is not None:
            return mapped
        if not self.keep_unmapped:
            return None
        name = _BAD.sub("_", tag.strip())[:200]
        return name or None
