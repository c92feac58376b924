"""Device choice and the CUDA-only speed knobs (bf16 autocast, channels_last)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class DeviceError(RuntimeError):
    """The job asks for a device this machine does not have."""


def resolve_device(spec: str) -> torch.device:
    """`auto` → the first CUDA device when present, else CPU; `cuda[:N]`/`mps` must exist."""
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} asked for, but no CUDA device is available here")
        index = dev.index if dev.index is not None else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps' asked for, but MPS is not available here")
    return dev


def available_devices() -> list[str]:
    """What a worker can offer when it claims a job: `cpu` plus every CUDA device, by name."""
    out = ["cpu"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append(f"cuda:{i} ({torch.cuda.get_device_name(i)})")
    return out


def amp_enabled(device: torch.device, amp: bool) -> bool:
    # bf16 autocast needs no loss scaling; on CPU it is slower than fp32 for convs, so CUDA only.
    return amp and device.type == "cuda"


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def memory_format(device: torch.device, channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last and device.type == "cuda" else torch.contiguous_format


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under torch's global CPU RNG seeded with `seed`, leaving the caller's state intact.

    Weight init uses the global generator (nn.init has no per-call generator for every scheme);
    forking keeps model construction reproducible without touching anyone else's randomness.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
