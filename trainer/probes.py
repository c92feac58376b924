"""Per-layer probes and the device-side metric buffer.

Cost rule (issue 2): nothing here synchronises with the host per step. Every probe
returns a device tensor built from a handful of vectorised ops (``torch._foreach_norm``
over all parameters, one ``index_add_`` to sum them per layer); `MetricBuffer` keeps the
rows on the device and hands them to the host in one ``.tolist()`` per flush.

The probe serves ganscope's own nets (their `param_layers()` names: conv1, convT2, fc1...) and any
`nn.Module` of a user's script (the SDK's `run.watch`): a layer is a module with parameters of its own,
named by its path in the module tree, in registration order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from ganscope.trainer.models import NamedNet

Layers = Mapping[str, list[nn.Parameter]]


def module_layers(net: nn.Module) -> "OrderedDict[str, list[nn.Parameter]]":
    """{layer: its own parameters} in registration order (the module tree's order, not sorted names).

    ganscope's nets name their layers themselves; any other module's layers are named by their dotted
    path (`main.0`, `block1.conv`), and parameters set on the module itself by its class name.
    """
    if isinstance(net, NamedNet):
        return net.param_layers()
    out: OrderedDict[str, list[nn.Parameter]] = OrderedDict()
    seen: set[int] = set()  # a shared (tied) parameter belongs to the first layer that registered it
    for path, module in net.named_modules():
        params = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        if params:
            seen.update(id(p) for p in params)
            out[path or type(module).__name__] = params
    return out


def is_weight_layer(params: list[nn.Parameter]) -> bool:
    """A layer with a matrix or kernel (linear, conv, embedding), not a normalisation layer's scale and shift."""
    return any(p.dim() >= 2 for p in params)


class LayerProbe:
    """Gradient, weight and update norms of every parameterised layer of one net.

    Around an optimizer step: `before_step()` keeps a copy of the weights, `after_step()`
    returns one tensor ``[grad norms (L), weight norms (L), update ratios (L)]`` from a single
    ``_foreach_norm`` over gradients, weights and weight changes (the optimizer leaves
    ``.grad`` untouched, so gradients can be measured after the step). `net` is a module (all its
    layers) or a {layer: parameters} mapping (some of them: those one optimizer updates).
    """

    KINDS = ("grad", "weight", "update")

    def __init__(self, net: nn.Module | Layers, net_key: str) -> None:
        layers = module_layers(net) if isinstance(net, nn.Module) else OrderedDict(net)
        if not layers:
            raise ValueError(f"net {net_key!r} has no parameters to probe")
        self.net_key = net_key
        self.layers: list[str] = list(layers)
        self.params: list[nn.Parameter] = [p for ps in layers.values() for p in ps]
        self._per_param = [i for i, ps in enumerate(layers.values()) for _ in ps]
        self._place(self.params[0].device)

    def _place(self, device: torch.device) -> None:
        """Device-side work buffers; again if the net moved (a script may call .to(device) after watch)."""
        n_layers = len(self.layers)
        # Tensor i of [grads, weights, deltas] belongs to output slot index[i]: one index_add_ sums
        # squared norms per layer for all three kinds at once.
        self.index = torch.tensor([k * n_layers + i for k in range(3) for i in self._per_param], device=device)
        self._prev: list[torch.Tensor] = [torch.empty_like(p) for p in self.params]
        self._zero = torch.zeros((), device=device)
        self.device = device

    def names(self) -> list[str]:
        """Metric names in the order of `after_step()`'s output."""
        return [f"{kind}/{self.net_key}/{layer}" for kind in self.KINDS for layer in self.layers]

    def before_step(self) -> None:
        if self.params[0].device != self.device or self.params[0].dtype != self._prev[0].dtype:
            self._place(self.params[0].device)
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

    def has(self, group: str) -> bool:
        return group in self._groups

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
        by_device: dict[torch.device, list[tuple[str, list[int], torch.Tensor]]] = {}
        for part in parts:  # a script may keep G and D on two devices: one transfer from each
            by_device.setdefault(part[2].device, []).append(part)
        for group_parts in by_device.values():
            # The one device → host transfer of the flush window.
            flat = torch.cat([t.float().reshape(-1) for _, _, t in group_parts]).cpu().tolist()
            offset = 0
            for group, steps, t in group_parts:
                n_rows, n_cols = t.shape
                block = flat[offset:offset + n_rows * n_cols]
                offset += n_rows * n_cols
                for j, name in enumerate(self._groups[group]):
                    s, v = out.setdefault(name, ([], []))
                    s.extend(steps)
                    v.extend(block[j::n_cols])
        for name, (steps, values) in self._host.items():
            if steps:
                s, v = out.setdefault(name, ([], []))
                s.extend(steps)
                v.extend(values)
        for group in self._rows:
            self._rows[group] = ([], [])
        self._host = {}
        return out

