"""What a worker owns and offers in its claims: its GPUs (by CUDA index), their model and memory, their NVML identity.

A claim lists these devices; the server gives the worker only jobs whose `gpus` it can serve
(README "Scaling out"). Cluster schedulers hand a worker its GPUs through CUDA_VISIBLE_DEVICES
(Slurm) or the device plugin (Kubernetes), so `--gpus all` takes whatever this process can see.
"""

from __future__ import annotations

from typing import Any

from ganscope.trainer.device import DeviceError


def resolve_gpus(device: str, gpus: str) -> list[int]:
    """The CUDA indices this worker owns: --gpus 0 (default) = the --device itself; N = N GPUs from --device's
    index on; all = every GPU visible to this process (what Slurm or Kubernetes allotted it)."""
    kind, _, idx = device.partition(":")
    if gpus == "0":
        return [int(idx or 0)] if kind == "cuda" else []
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == "all":
        if kind != "cuda" and visible:
            raise DeviceError(f"--gpus all with --device {device}: pick a CUDA device (or auto) to use the GPUs")
        return list(range(visible))
    n, first = int(gpus), int(idx or 0)
    if kind != "cuda":
        raise DeviceError(f"--gpus {n} asked for, but the worker's device is {device}: "
                          f"{visible} CUDA device(s) are visible here")
    if first + n > visible:
        raise DeviceError(f"--gpus {n} from {device} asked for, but only {visible} CUDA device(s) are visible here")
    return list(range(first, first + n))


def describe_devices(device: str, gpu_indices: list[int]) -> list[dict[str, Any]]:
    """What a claim advertises: each GPU with its model and memory, or the one CPU/MPS device."""
    mib = 1024 * 1024
    if gpu_indices:
        import torch

        out = []
        for i in gpu_indices:
            props = torch.cuda.get_device_properties(i)
            out.append({"name": f"cuda:{i}", "kind": "cuda", "model": props.name,
                        "memory_mb": int(props.total_memory // mib)})
        return out
    if device == "mps":
        return [{"name": "mps", "kind": "mps", "model": "Apple GPU", "memory_mb": None}]
    import platform

    import psutil

    return [{"name": "cpu", "kind": "cpu", "model": platform.processor() or platform.machine(),
             "memory_mb": int(psutil.virtual_memory().total // mib)}]


def gpu_uuid(index: int) -> str | None:
    """The NVML identity of cuda:<index> as torch sees it (robust to CUDA_VISIBLE_DEVICES renumbering)."""
    import torch

    try:
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    except (RuntimeError, AssertionError):
        return None
    return str(uuid) if uuid else None
