"""System metrics of a worker: GPU utilisation, memory, temperature and power; CPU and RAM (docs/metrics.md, sys/*).

GPUs are read through NVIDIA's management library (NVML, the `nvidia-ml-py` package, imported as
`pynvml`), the same source as nvidia-smi; host and process figures through psutil. No torch here:
the worker hands over which GPUs are its own (`GpuRef`: the index the job sees and the device's
UUID), so `sys/gpu<i>/*` follows the job's `cuda:<i>` whatever CUDA_VISIBLE_DEVICES renumbered.

Without NVML (no driver, no NVIDIA GPU, the package missing) `SystemSampler` reports host and process
figures only: no error, no `sys/gpu*` names. A query a device does not support (power on some boards)
leaves that one name out.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

log = logging.getLogger("ganscope.sysmetrics")
MB = 1024 * 1024


@dataclass(frozen=True)
class GpuRef:
    index: int  # the job's cuda:<index>
    uuid: str | None = None  # NVML's "GPU-..." (torch reports it without the prefix; either is accepted)


def _visible_nvml_ids() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as NVML identifiers (indices or UUIDs), or None when unset."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None or raw.strip() == "":
        return None
    return [x.strip() for x in raw.split(",") if x.strip()]


class SystemSampler:
    """One `sample()` -> {"sys/...": value}. Create once per process; `close()` shuts NVML down."""

    def __init__(self, gpus: list[GpuRef] | None = None) -> None:
        self.gpu_error: str | None = None  # why there are no GPU figures, when there are none
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []
        self._proc = psutil.Process()
        # psutil's CPU percentages measure since the previous call: prime them so the first sample means something.
        psutil.cpu_percent(interval=None)
        self._proc.cpu_percent(interval=None)
        if gpus:
            self._open_nvml(gpus)

    @property
    def gpu_count(self) -> int:
        return len(self._handles)

    def _open_nvml(self, gpus: list[GpuRef]) -> None:
        try:
            import pynvml
        except ImportError as exc:
            self.gpu_error = f"nvidia-ml-py (pynvml) is not installed: {exc}"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.gpu_error = f"NVML unavailable: {exc}"
            return
        self._nvml = pynvml
        visible = _visible_nvml_ids()
        for ref in gpus:
            try:
                self._handles.append((ref.index, self._handle(pynvml, ref, visible)))
            except (pynvml.NVMLError, ValueError, IndexError) as exc:
                log.warning("no system metrics for cuda:%d: %s", ref.index, exc)
        if not self._handles:
            self.gpu_error = "NVML found none of this worker's GPUs"

    @staticmethod
    def _handle(pynvml: Any, ref: GpuRef, visible: list[str] | None) -> Any:
        if ref.uuid:
            uuid = ref.uuid if ref.uuid.startswith(("GPU-", "MIG-")) else f"GPU-{ref.uuid}"
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(uuid)
            except pynvml.NVMLError:
                pass  # fall back to the index below
        ident = visible[ref.index] if visible is not None else str(ref.index)
        if ident.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(ident))
        return pynvml.nvmlDeviceGetHandleByUUID(ident)

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for index, handle in self._handles:
            out.update(self._gpu(index, handle))
        vm = psutil.virtual_memory()
        out["sys/cpu_pct"] = float(psutil.cpu_percent(interval=None))
        out["sys/ram_mb"] = (vm.total - vm.available) / MB
        out["sys/ram_pct"] = float(vm.percent)
        try:
            with self._proc.oneshot():
                out["sys/proc_cpu_pct"] = float(self._proc.cpu_percent(interval=None))
                rss = self._proc.memory_info().rss
            for child in self._proc.children(recursive=True):  # data-loading processes, torchrun ranks
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
            out["sys/proc_rss_mb"] = rss / MB
        except psutil.Error as exc:
            log.debug("process figures unavailable: %s", exc)
        return out

    def _gpu(self, index: int, handle: Any) -> dict[str, float]:
        nv = self._nvml
        p = f"sys/gpu{index}/"
        out: dict[str, float] = {}
        reads: list[tuple[str, Callable[[], float]]] = [
            ("util", lambda: float(nv.nvmlDeviceGetUtilizationRates(handle).gpu)),
            ("mem_used_mb", lambda: nv.nvmlDeviceGetMemoryInfo(handle).used / MB),
            ("mem_pct", lambda: (lambda m: 100.0 * m.used / m.total if m.total else 0.0)(
                nv.nvmlDeviceGetMemoryInfo(handle))),
            ("temp_c", lambda: float(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))),
            ("power_w", lambda: nv.nvmlDeviceGetPowerUsage(handle) / 1000.0),  # milliwatts
        ]
        for name, read in reads:
            try:
                out[p + name] = read()
            except nv.NVMLError:
                pass  # not supported on this board, or the GPU fell off the bus: that name is absent
        return out

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None


class SysMetricsThread:
    """Samples every `every` seconds on a daemon thread and hands each sample to `on_sample`."""

    def __init__(self, sampler: SystemSampler, every: float, on_sample: Callable[[dict[str, float]], None]) -> None:
        self.sampler, self.every, self.on_sample = sampler, every, on_sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ganscope-sysmetrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.on_sample(self.sampler.sample())
            except Exception:  # noqa: BLE001 - metrics about the machine must never end the worker
                log.exception("system metrics sample failed; trying again in %.1fs", self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.sampler.close()
