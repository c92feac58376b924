"""An exponential moving average of G's weights (the ``ema_g`` knob).

Averaging the generator's weights over the last ~1/(1 − decay) updates damps the rotation
that simultaneous gradient play leaves in them (Yazici et al. 2019); ProGAN, StyleGAN and
BigGAN sample from such an average. After every G update:

    W_ema ← decay · W_ema + (1 − decay) · W_g

for every parameter and every floating-point buffer (batch norm's running mean and variance,
spectral norm's power-iteration vectors), through `torch.optim.swa_utils.get_ema_multi_avg_fn`
(one fused ``_foreach_lerp_`` over all tensors). Integer buffers (batch norm's update counter)
are copied. The average starts as a copy of G at step 0.

Why not `AveragedModel` itself: its `update_parameters` reads its update counter on the host
(``bool(n_averaged == 0)``) and copies it to the device on every call — a host synchronisation per
G step on CUDA, which the trainer never does. The arithmetic is the same building block.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ganscope.trainer.models import NamedNet


class EmaGenerator:
    """A frozen copy of G that follows it as an exponential moving average."""

    def __init__(self, g: NamedNet, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module: NamedNet = copy.deepcopy(g)
        self.module.requires_grad_(False)
        self._lerp = get_ema_multi_avg_fn(decay)
        self._pairs(g)

    def _pairs(self, g: nn.Module) -> None:
        # Both nets have the same structure, so their parameters and buffers pair up in order.
        mine = list(itertools.chain(self.module.parameters(), self.module.buffers()))
        theirs = list(itertools.chain(g.parameters(), g.buffers()))
        if [t.shape for t in mine] != [t.shape for t in theirs]:
            raise ValueError("the EMA copy and G have different tensors")
        floating = [i for i, t in enumerate(mine) if t.is_floating_point()]
        counters = [i for i, t in enumerate(mine) if not t.is_floating_point()]
        self._avg_dst = [mine[i].detach() for i in floating]
        self._avg_src = [theirs[i].detach() for i in floating]
        self._copy_dst = [mine[i].detach() for i in counters]
        self._copy_src = [theirs[i].detach() for i in counters]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average toward G's current weights (call after each G optimizer step)."""
        self._lerp(self._avg_dst, self._avg_src, None)
        if self._copy_dst:
            torch._foreach_copy_(self._copy_dst, self._copy_src)

    @torch.no_grad()
    def reset_to(self, g: nn.Module) -> None:
        """Restart the average at G's weights (a resumed run that had no average yet)."""
        self.module.load_state_dict(g.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
