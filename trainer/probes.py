"""Per-layer probes and the device-side metric buffer.

Cost rule (issue 2): nothing here synchronises with the host per step. Every probe
returns a device tensor built from a handful of vectorised ops (``torch._foreach_norm``
over all parameters, one ``index_add_`` to sum them per layer); `MetricBuffer` keeps the
rows on the device and hands them to the host in one ``.tolist()`` per flush.
"""

from __future__ import annotations

import torch
from torch import nn

from ganscope.trainer.models import NamedNet


class LayerProbe:
    """Gradient, weight and update norms of every parameterised layer of one net.

    Around an optimizer step: `before_step()` keeps a copy of the weights, `after_step()`
    returns one tensor ``[grad norms (L), weight norms (L), update ratios (L)]`` from a single
    ``_foreach_norm`` over gradients, weights and weight changes (the optimizer leaves
    ``.grad`` untouched, so gradients can be measured after the step).
    """

    KINDS = ("grad", "weight", "update")

    def __init__(self, net: NamedNet, net_key: str) -> None:
        layers = net.param_layers()
        self.net_key = net_key
        self.layers: list[str] = list(layers)
        self.params: list[nn.Parameter] = [p for ps in layers.values() for p in ps]
        device = self.params[0].device
        n_layers = len(self.layers)
        per_param = [i for i, ps in enumerate(layers.values()) for _ in ps]
        # Tensor i of [grads, weights, deltas] belongs to output slot index[i]: one index_add_ sums
        # squared norms per layer for all three kinds at once.
        self.index = torch.tensor([k * n_layers + i for k in range(3) for i in per_param], device=device)
        self._prev: list[torch.Tensor] = [torch.empty_like(p) for p in self.params]
        self._zero = torch.zeros((), device=device)

    def names(self) -> list[str]:
        """Metric names in the order of `after_step()`'s output."""
        return [f"{kind}/{self.net_key}/{layer}" for kind in self.KINDS for layer in self.layers]

    def before_step(self) -> None:
        torch._foreach_copy_(self._prev, [p.detach() for p in self.params])

    def after_step(self) -> torch.Tensor:
        weights = [p.detach() for p in self.params]
        grads = [p.grad if p.grad is not None else self._zero for p in self.params]
        # In place: the copy becomes the (negated) update; no fresh allocation of a net-sized buffer.
        torch._foreach_sub_(self._prev, weights)
        norms = torch.stack(torch._foreach_norm([*grads, *weights, *self._prev])).float()
        n = len(self.layers)
        sq = torch.zeros(3 * n, device=norms.device).index_add_(0, self.index, norms * norms).sqrt()
        # update ratio ‖W_after − W_before‖ / ‖W_after‖ (Karpathy's rule of thumb: ~1e-3 is healthy)
        return torch.cat([sq[:2 * n], sq[2 * n:] / sq[n:2 * n].clamp_min(1e-12)])


def batch_spread(x: torch.Tensor) -> torch.Tensor:
    """Root of the summed per-feature variance over the batch.

    Equals the mean pairwise distance's RMS up to a constant (E‖xi − xj‖² = 2·Σ var), in O(B·D)
    instead of cdist's O(B²·D).
    """
    flat = x.detach().float().flatten(1)
    return flat.var(dim=0, unbiased=False).sum().sqrt()


def diversity(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """G's batch spread over the real batch's: ~1 when healthy, → 0 as samples collapse."""
    return batch_spread(fake) / batch_spread(real).clamp_min(1e-12)


class MetricBuffer:
    """Metric rows kept where they were computed until a flush moves them all in one transfer."""

    def __init__(self) -> None:
        self._groups: dict[str, list[str]] = {}
        self._rows: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
        self._host: dict[str, tuple[list[int], list[float]]] = {}

    def define(self, group: str, names: list[str]) -> None:
        self._groups[group] = list(names)
        self._rows[group] = ([], [])

    def names(self, group: str) -> list[str]:
        return self._groups[group]

    def record(self, group: str, step: int, row: torch.Tensor) -> None:
        """One device row: row[i] is the value of names(group)[i] at `step`."""
        steps, rows = self._rows[group]
        steps.append(step)
        rows.append(row.detach())

    def record_host(self, name: str, step: int, value: float) -> None:
        steps, values = self._host.setdefault(name, ([], []))
        steps.append(step)
        values.append(float(value))

    def pending(self) -> int:
        return sum(len(s) for s, _ in self._rows.values()) + sum(len(s) for s, _ in self._host.values())

    def drain(self) -> dict[str, tuple[list[int], list[float]]]:
        """Everything recorded since the last drain, as host floats (NaN/Inf kept)."""
        out: dict[str, tuple[list[int], list[float]]] = {}
        parts = [(g, steps, torch.stack(rows)) for g, (steps, rows) in self._rows.items() if rows]
        if parts:
            # The one device → host transfer of the flush window.
            flat = torch.cat([t.float().reshape(-1) for _, _, t in parts]).cpu().tolist()
            offset = 0
            for group, steps, t in parts:
                n_rows, n_cols = t.shape
                block = flat[offset:offset + n_rows * n_cols]
                offset += n_rows * n_cols
                for j, name in enumerate(self._groups[group]):
                    out[name] = (list(steps), block[j::n_cols])
        for name, (steps, values) in self._host.items():
            if steps:
                s, v = out.setdefault(name, ([], []))
                s.extend(steps)
                v.extend(values)
        for group in self._rows:
            self._rows[group] = ([], [])
        self._host = {}
        return out

