"""Parameter counts of the trainer's networks, computed from a job config without torch.

The probes log `weight/<net>/<layer>` as the L2 norm of a layer's parameters. To read a
weight *spread* off it (poor_init) the rule needs each layer's element count, and the
G/D parameter ratio (capacity_imbalance) needs the totals. The server may not import the
trainer's models (they import torch), so the shapes of trainer/models.py are restated
here; tests/test_detectors_rules.py builds the real nets and checks every count, so the
two cannot drift apart silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# trainer/models.py: minibatch discrimination kernels and their dimension.
MBD_KERNELS = 16
MBD_KERNEL_DIM = 8
TOY_DIMS = {"ring8": 2, "grid25": 2, "gauss1d": 1, "bimodal1d": 1, "trimodal1d": 1, "poisson1d": 1}
CHANNELS = {"shapes": 3, "mnist": 1, "fashion_mnist": 1, "cifar10": 3, "celeba": 3, "folder": 3}


@dataclass(frozen=True)
class Layer:
    weights: int  # elements of the weight tensor (the one the init draws)
    biases: int  # elements of the bias (zero at init)
    kind: str  # "conv" | "fc" | "bn" | "mbd"

    @property
    def total(self) -> int:
        return self.weights + self.biases


def _dcgan(cfg: Mapping[str, Any]) -> dict[str, dict[str, Layer]]:
    size = int(cfg.get("image_size", 64))
    n = int(math.log2(size)) - 1
    nz, ngf, ndf = int(cfg.get("nz", 100)), int(cfg.get("ngf", 64)), int(cfg.get("ndf", 64))
    ch = CHANNELS.get(str(cfg.get("dataset", "shapes")), 3)
    bn = bool(cfg.get("batch_norm", True))
    g: dict[str, Layer] = {}
    width = ngf * 2 ** (n - 2)
    g["convT1"] = Layer(nz * width * 16, 0 if bn else width, "conv")
    for k in range(1, n):
        if bn:
            g[f"bn{k}"] = Layer(width, width, "bn")
        out = ch if k == n - 1 else width // 2
        g[f"convT{k + 1}"] = Layer(width * out * 16, out if (not bn or k == n - 1) else 0, "conv")
        width = out
    d: dict[str, Layer] = {}
    cin, cout = ch, ndf
    ksize = 16 if cfg.get("d_downsample", "strided") == "strided" else 9
    for k in range(1, n):
        d[f"conv{k}"] = Layer(cout * cin * ksize, cout if (not bn or k == 1) else 0, "conv")
        if bn and k > 1:
            d[f"bn{k}"] = Layer(cout, cout, "bn")
        cin, cout = cout, cout * 2
    head_in = cin
    if cfg.get("minibatch_disc", False):
        d["mbd"] = Layer(cin * 16 * MBD_KERNELS * MBD_KERNEL_DIM, 0, "mbd")
        head_in += MBD_KERNELS
    d[f"conv{n}"] = Layer(head_in * 16, 1, "conv")
    return {"g": g, "d": d}


def _mlp(cfg: Mapping[str, Any], dim: int) -> dict[str, dict[str, Layer]]:
    h, layers, nz = int(cfg.get("toy_hidden", 128)), int(cfg.get("toy_layers", 3)), int(cfg.get("nz", 100))
    g: dict[str, Layer] = {}
    width = nz
    for k in range(1, layers + 1):
        g[f"fc{k}"] = Layer(width * h, h, "fc")
        width = h
    g[f"fc{layers + 1}"] = Layer(h * dim, dim, "fc")
    d: dict[str, Layer] = {}
    width = dim
    for k in range(1, layers + 1):
        d[f"fc{k}"] = Layer(width * h, h, "fc")
        width = h
    head_in = h
    if cfg.get("minibatch_disc", False):
        d["mbd"] = Layer(h * MBD_KERNELS * MBD_KERNEL_DIM, 0, "mbd")
        head_in += MBD_KERNELS
    d[f"fc{layers + 1}"] = Layer(head_in, 1, "fc")
    return {"g": g, "d": d}


def layers(cfg: Mapping[str, Any] | None) -> dict[str, dict[str, Layer]] | None:
    """{"g": {layer: Layer}, "d": {...}} for a config the trainer builds; None when unknown."""
    cfg = cfg or {}
    ds = str(cfg.get("dataset", "shapes"))
    try:
        if ds in TOY_DIMS:
            return _mlp(cfg, TOY_DIMS[ds])
        if ds in CHANNELS:
            return _dcgan(cfg)
    except (TypeError, ValueError):
        return None
    return None


def totals(cfg: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(G parameters, D parameters) of a config's nets."""
    arch = layers(cfg)
    if arch is None:
        return None
    return sum(x.total for x in arch["g"].values()), sum(x.total for x in arch["d"].values())
