"""Per-layer probes and the device-side metric buffer.

Cost rule (issue 2): nothing here synchronises with the host per step. Every probe
returns a device tensor built from a handful of vectorised ops (``torch._foreach_norm``
over all parameters, one ``index_add_`` to sum them per layer); `MetricBuffer` keeps the
rows on the device and hands them to the host in one ``.tolist()`` per flush.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainer.models import NamedNet


class LayerProbe:
    """Gradient, weight and update norms of every parameterised layer of one net."""

    def __init__(self, net: NamedNet, net_key: str) -> None:
        layers = net.param_layers()
        self.net_key = net_key
        self.layers: list[str] = list(layers)
        self.params: list[nn.Parameter] = [p for ps in layers.values() for p in ps]
        device = self.params[0].device
        # Parameter i belongs to layer index[i]; squared norms are summed per layer with one index_add_.
        self.index = torch.tensor([i for i, ps in enumerate(layers.values()) for _ in ps], device=device)
        self._prev: list[torch.Tensor] = [torch.empty_like(p, memory_format=torch.preserve_format)
                                          for p in self.params]
        self._zeros = [torch.zeros((), device=device)] * len(self.params)

    def names(self, kind: str) -> list[str]:
        return [f"{kind}/{self.net_key}/{layer}" for layer in self.layers]

    def _per_layer(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        norms = torch.stack(torch._foreach_norm(tensors)).float()
        sq = torch.zeros(len(self.layers), device=norms.device).index_add_(0, self.index, norms * norms)
        return sq.sqrt()

    def grad_norms(self) -> torch.Tensor:
        grads = [p.grad if p.grad is not None else z for p, z in zip(self.params, self._zeros)]
        return self._per_layer(grads)

    def weight_norms(self) -> torch.Tensor:
        return self._per_layer([p.detach() for p in self.params])

    def remember(self) -> None:
        """Keep a copy of the weights before an optimizer step (for the update ratio)."""
        torch._foreach_copy_(self._prev, [p.detach() for p in self.params])

    def update_ratios(self) -> torch.Tensor:
        """‖W_after − W_before‖ / ‖W_before‖ per layer (Karpathy's ~1e-3 rule of thumb)."""
        delta = torch._foreach_sub([p.detach() for p in self.params], self._prev)
        return self._per_layer(delta) / self._per_layer(self._prev).clamp_min(1e-12)


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

