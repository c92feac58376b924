"""Log your own training script to a ganscope server: the same charts and failure signatures.

    import ganscope

    run = ganscope.init(name="my dcgan", config=vars(opt),
                        declared={"loss": "nonsaturating", "total_steps": opt.niter * len(loader)})
    run.watch(netG, netD)                       # per-layer gradients, weights and update ratios
    for step, (real, _) in enumerate(...):
        ...
        run.log_d_outputs(real=output_real, fake=output_fake, logits=False)
        run.log({"loss/d": errD, "loss/g": errG}, step=step)
    run.finish()                                # or leave it: the script's end finishes the run

`config` is the script's own options, kept as given; `declared` is what the detectors read (docs/sdk.md).
Points are batched and go through the same durable spool as the worker's, so a server restart loses
nothing; if the server is down at `init` the run starts offline and is created when it returns. Values
may be Python floats, numpy scalars or torch tensors (kept on their device until a flush: no host sync
per step). Nothing here imports torch: `watch` and the tensor helpers load it from the script.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ganscope.trainer import sdk_exit
from ganscope.trainer.client import Client, ServerUnavailable
from ganscope.trainer.config import validate_declared
from ganscope.trainer.sdk_exit import RunStopped
from ganscope.trainer.sdk_options import check_declared, user_config

log = logging.getLogger("ganscope.sdk")

__all__ = ["Run", "RunStopped", "init", "replay", "ServerUnavailable"]
DEFAULT_SERVER = "http://127.0.0.1:8000"


class Run:
    """One SDK run on the server (kind "sdk")."""

    def __init__(self, server: str | None = None, *, name: str = "", config: Any = None,
                 declared: Mapping[str, Any] | None = None, token: str | None = None,
                 spool_dir: str | Path | None = None, batch_points: int = 5000, flush_seconds: float = 1.0,
                 drain_timeout: float = 60.0, connect_for: float = 2.0, heartbeat_seconds: float = 10.0,
                 raise_on_stop: bool = False, flush_every: int = 50, quiet: bool = False,
                 key: str | None = None) -> None:
        server = server or os.environ.get("GANSCOPE_SERVER") or DEFAULT_SERVER
        token = token if token is not None else (os.environ.get("GANSCOPE_TOKEN") or None)
        self.declared: dict[str, Any] = check_declared(declared)  # a bad field raises here, before any training
        self.user_config: dict[str, Any] = user_config(config)
        # Names the run until the server gives it an id; creating twice with one key makes one run.
        self.key = key or uuid.uuid4().hex
        self.drain_timeout = drain_timeout
        self.raise_on_stop = raise_on_stop
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self.quiet = quiet
        self.action: str | None = None  # "stop" / "cancel" once the server asks
        self.reason: str | None = None
        self.finished = False
        self.id: int | None = None
        self.url: str | None = None
        self.info: dict[str, Any] = {}
        self._step = 0
        self._raised = False
        self._device: Any = None  # trainer.watch.DeviceLog, made when a tensor first shows up
        self._watch: Any = None
        self._created = threading.Event()
        base = Path(spool_dir) if spool_dir else _default_spool_root()
        base.mkdir(parents=True, exist_ok=True)
        # A private folder per Run: two scripts (or two runs of one script) never share a spool.
        folder = Path(tempfile.mkdtemp(prefix=f"sdk-{self.key[:8]}-", dir=base))
        self.client = Client(server, folder, token=token, on_action=self._on_action, on_created=self._on_created,
                             batch_points=batch_points, flush_seconds=flush_seconds)
        seq = self.client.create_run(self.key, {"name": name, "config": self.user_config,
                                                "declared": self.declared})
        if self._wait_created(seq, connect_for) and not self._created.is_set():
            why = _rejection(self.client, seq)
            self.client.close(0)
            _remove_quietly(folder, keep_rejected=False)
            raise RuntimeError(f"the server refused to create the run: {why}")
        if self._created.is_set():
            self._say(f"run {self.id}: {self.url}")
        else:
            why = f" ({self.client.down})" if self.client.down else ""
            self._say(f"server {self.client.base} is not answering{why}: logging offline to {folder}; the run "
                      "is created and its points sent when the server answers (training goes on)", warning=True)
        self._heartbeat = sdk_exit.Heartbeat(self, heartbeat_seconds, token)
        self._heartbeat.start()
        sdk_exit.register(self)

    def _wait_created(self, seq: int, timeout: float) -> bool:
        """Wait for the creation to be delivered (True: accepted or refused); give up at once when the server
        is known down (connection refused, a wrong token): training must not wait for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.wait_delivered(seq, 0.05):
                return True
            if self.client.down is not None:
                return False
        return False

    # --- what the server says ---------------------------------------------------
    def _on_created(self, key: str, run_id: int, answer: dict[str, Any]) -> None:
        if key != self.key:
            return
        late = self.id is None and self._heartbeat_started()
        self.id, self.info = run_id, answer
        self.url = f"{self.client.base}/runs/{run_id}"
        for note in answer.get("notes") or []:
            self._say(note, warning=True)
        self._created.set()
        if late:
            self._say(f"server reachable again: run {run_id} created, sending what was logged: {self.url}")

    def _heartbeat_started(self) -> bool:
        return getattr(self, "_heartbeat", None) is not None

    def _on_action(self, run_id: int, action: str, reason: str | None) -> None:
        if run_id == self.id and action in ("stop", "cancel") and self.action is None:
            self.action, self.reason = action, reason
            self._say(f"run {run_id}: the server asks to {action}: {reason}", warning=True)

    def _say(self, text: str, warning: bool = False) -> None:
        (log.warning if warning else log.info)("%s", text)
        if not self.quiet:
            print(f"ganscope: {text}", file=sys.stderr, flush=True)

    # --- logging ----------------------------------------------------------------
    @property
    def step(self) -> int:
        """The step the next `log()` without a step will use: one past the last step logged."""
        return self._step

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record {name: value} at `step` (default: one past the last step logged).

        Everything the helpers and `watch` measured since the previous `log` is attached to this step too,
        so one `log` per iteration, after the updates, lines everything up. Tensors stay on their device
        until the next flush (every `flush_every` steps or `flush_seconds`).
        """
        if self.finished:
            raise RuntimeError(f"run {self.id or self.key} is finished")
        if self.raise_on_stop and self.should_stop() and not self._raised:
            self._raised = True
            raise RunStopped(self.action or "stop", self.reason)
        step = self._step if step is None else int(step)
        self._step = step + 1
        host: dict[str, tuple[list[int], list[float | None]]] = {}
        tensors: dict[str, Any] = {}
        for name, v in metrics.items():
            if _is_tensor(v):
                tensors[name] = v
            else:
                host[name] = ([step], [_number(v)])
        if host:
            self.client.log_metrics(self.key, host)
        if tensors or self._device is not None:
            self._device_log().log(step, tensors)
            self._flush_device(force=False)

    def log_series(self, name: str, steps: list[int], values: list[Any]) -> None:
        """Many points of one metric at once (columnar, the cheap way)."""
        self.client.log_metrics(self.key, {name: (list(steps), [_number(v) for v in values])})
        if steps:
            self._step = max(self._step, int(max(steps)) + 1)

    def log_image(self, step: int, png: bytes, kind: str = "grid") -> None:
        """A PNG you made yourself; `log_images` makes one from a batch of images."""
        if not png.startswith(b"\x89PNG"):
            raise ValueError("log_image takes PNG bytes")
        self.client.put_sample(self.key, step, kind, png)

    # --- torch helpers (docs/sdk.md; trainer/watch.py does the work) ----------------
    def watch(self, generator: Any, discriminator: Any, every: int = 1) -> "Run":
        """Per-layer gradient norms, weight norms and update ratios of both nets (grad|weight|update/<g|d>/<layer>),
        measured around every `every`-th optimizer step of each net, whatever optimizers the script uses.
        Declares each net's layer order (registration order) as the run's `layers`."""
        from ganscope.trainer.watch import Watch

        if self._watch is not None:
            self._watch.close()
        self._watch = Watch(self._device_log(), {"g": generator, "d": discriminator}, every)
        self.declare(layers=self._watch.declared_layers())
        for name, value in self._watch.sizes().items():
            self.client.log_metrics(self.key, {name: ([self._step], [value])})
        return self

    def log_gan(self, step: int | None = None, *, loss_d: Any = None, loss_g: Any = None, d_real: Any = None,
                d_fake: Any = None, d_fake_g: Any = None, logits: bool = True, fake: Any = None, real: Any = None,
                **metrics: Any) -> None:
        """One call per iteration for a usual GAN loop: loss/d, loss/g, D's outputs (as `log_d_outputs`:
        d_real, d_fake on D's step, d_fake_g on G's), sample/diversity when both `fake` and `real` batches are
        given, and any other metric as name=value (`loss_d_real=...` is logged as loss/d_real). Then as `log`."""
        if d_real is not None or d_fake is not None or d_fake_g is not None:
            self.log_d_outputs(real=d_real, fake=d_fake, fake_g=d_fake_g, logits=logits)
        if fake is not None and real is not None:
            self.log_diversity(fake, real)
        values = {"loss/d": loss_d, "loss/g": loss_g,
                  **{k.replace("__", "/").replace("_", "/", 1) if k.startswith(("loss_", "lr_")) else k: v
                     for k, v in metrics.items()}}
        self.log({k: v for k, v in values.items() if v is not None}, step)

    def log_d_outputs(self, real: Any = None, fake: Any = None, fake_g: Any = None, *, logits: bool = True,
                      step: int | None = None) -> None:
        """D's raw outputs on a real batch, on the fake batch of D's step, and on G's step (`fake_g`).

        `logits=True`: D's last layer has no sigmoid (BCEWithLogits, hinge, WGAN); `False`: D ends in a sigmoid
        and these are probabilities (pytorch/examples' DCGAN). Logs score/* (mean raw output; for
        probabilities, the mean logit) and, unless the declared loss is hinge/wgan/wgan_gp, pred/* (mean
        probability). Without `step`, they join the next `log()`."""
        self._device_log().d_outputs({"real": real, "fake": fake, "fake_g": fake_g}, logits,
                                     critic=self.declared.get("loss") in ("hinge", "wgan", "wgan_gp"), step=step)

    def log_diversity(self, fake: Any, real: Any, step: int | None = None) -> None:
        """sample/diversity: the spread of G's batch over the real batch's (~1 healthy, → 0 as samples collapse)."""
        self._device_log().diversity(fake, real, step)

    def log_modes(self, fake: Any, centers: Any = None, sigma: float | None = None, step: int | None = None) -> None:
        """toy/modes (mixture modes G's good samples cover) and toy/quality (fraction of samples within 3 sigma
        of a mode), for a Gaussian-mixture toy set: its `centers` (K, dim) and `sigma`, or, without them, the
        declared dataset's (ring8, grid25, bimodal1d...). One host read: call it every few dozen steps."""
        from ganscope.trainer.watch import mixture

        self._device_log().modes(fake, mixture(centers, sigma, self.declared.get("dataset")), step)

    def log_quality(self, fake: Any, real: Any, step: int | None = None, *,
                    value_range: tuple[float, float] = (-1.0, 1.0)) -> dict[str, float]:
        """Ground truth from a batch of G's samples and one of real ones (a few hundred each): images give
        quality/kid, fid, precision, recall, coverage (and, for the declared dataset `shapes`, recognisable and
        modes) with the trainer's extractor choice; 1-D/2-D points give toy/fit. Returns the values logged.
        A forward pass of both batches through a feature net: call it every few hundred steps."""
        from ganscope.trainer.quality.evaluate import measure_batches

        dataset = self.declared.get("dataset") or self.user_config.get("dataset")  # as the server reads config
        values = measure_batches(fake, real, value_range=value_range, dataset=dataset)
        self.log(values, step)
        return values

    def log_images(self, step: int, images: Any, *, value_range: tuple[float, float] = (-1.0, 1.0),
                   nrow: int | None = None, kind: str = "grid") -> None:
        """A grid PNG of a batch of images (N, C, H, W) in `value_range`, or a scatter of 2-D / 1-D points."""
        from ganscope.trainer.watch import images_png

        self.log_image(step, images_png(images, value_range, nrow), kind)

    def log_samples(self, step: int, generator: Any, z: Any, **kw: Any) -> None:
        """G(z) for a fixed z, drawn without gradients and without moving G's batch-norm statistics."""
        from ganscope.trainer.watch import generate

        self.log_images(step, generate(generator, z), **kw)

    # --- the declared part ----------------------------------------------------------
    def declare(self, **fields: Any) -> None:
        """Change what the run declares (docs/sdk.md), e.g. `run.declare(total_steps=5000)`; None removes a field."""
        validate_declared({k: v for k, v in fields.items() if v is not None})  # raises on a bad field
        self.declared = {k: v for k, v in {**self.declared, **fields}.items() if v is not None}
        self.client.put_config(self.key, fields)

    # --- control --------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True once the server asked this run to stop (a failing signature under on_failure: stop, or cancel)."""
        return self.action in ("stop", "cancel")

    # --- the end ------------------------------------------------------------------
    def finish(self, status: str | None = None, error: str | None = None) -> bool:
        """Report the final status after every point; True if the server has everything.

        Without a status: succeeded, or stopped / cancelled when the server asked for that."""
        if self.finished:
            return True
        self.finished = True
        if status is None:
            status = {"stop": "stopped", "cancel": "cancelled"}.get(self.action or "", "succeeded")
            error = error or (self.reason if status != "succeeded" else None)
        try:
            if self._device is not None:
                self._device.commit(self._step)
                self._flush_device(force=True)
        finally:
            if self._watch is not None:
                self._watch.close()
            self._heartbeat.stop()
            sdk_exit.unregister(self)
        self.client.finish(self.key, {"status": status, "step": max(self._step - 1, 0), "error": error})
        # Offline from the start: no use waiting the full drain time for a server that was never there. A
        # server that went away mid-run is more likely restarting: give it the full time.
        offline = self.id is None and self.client.down is not None
        drained = self.client.close(min(self.drain_timeout, 5.0) if offline else self.drain_timeout)
        folder = self.client.spool.root
        if drained:
            _remove_quietly(folder)
        else:
            self._say(f"run {self.id or '(not created yet)'}: the server is unreachable; "
                      f"{self.client.spool.count()} requests kept in {folder}; send them later with "
                      f"ganscope.replay({self.client.base!r}, {str(folder)!r})", warning=True)
        return drained

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if isinstance(exc, RunStopped):
            self.finish()  # stopped / cancelled with the server's reason
            return True  # the loop was told to stop: carry on after the block
        self.finish(*sdk_exit.ending(exc))
        return False

    # --- device-side values -------------------------------------------------------------
    def _device_log(self) -> Any:
        if self._device is None:
            from ganscope.trainer.watch import DeviceLog

            self._device = DeviceLog(self.flush_every, self.flush_seconds)
        return self._device

    def _flush_device(self, force: bool) -> None:
        if self._device is not None and (force or self._device.due()):
            series = self._device.drain()
            if series:
                self.client.log_metrics(self.key, series)


def init(server: str | None = None, **kw: Any) -> Run:
    """Start a run (see `Run`); `server` defaults to $GANSCOPE_SERVER, then http://127.0.0.1:8000."""
    return Run(server, **kw)


def replay(server: str, spool_dir: str | Path, token: str | None = None, timeout: float = 60.0) -> bool:
    """Deliver a spool left behind by a script that could not reach the server (its runs are created then)."""
    client = Client(server, Path(spool_dir), token=token if token is not None else os.environ.get("GANSCOPE_TOKEN"))
    drained = client.close(timeout)
    if drained:
        _remove_quietly(Path(spool_dir))
    return drained


# --- values and configs -------------------------------------------------------------------

def _is_tensor(v: Any) -> bool:
    torch = sys.modules.get("torch")  # never imported here: a tensor means the script has torch
    return torch is not None and isinstance(v, torch.Tensor)


def _number(v: Any) -> float | None:
    if v is None:
        return None
    if hasattr(v, "item"):  # numpy scalars, without importing numpy
        v = v.item()
    return float(v)


def _rejection(client: Client, seq: int) -> str:
    for reason in client.spool.rejected_dir.glob(f"{seq:012d}.*.reason.txt"):
        return reason.read_text().strip()
    return "rejected"


def _default_spool_root() -> Path:
    return Path(os.environ.get("GANSCOPE_SPOOL", Path.home() / ".cache" / "ganscope" / "sdk-spool"))


def _remove_quietly(folder: Path, keep_rejected: bool = True) -> None:
    if keep_rejected and any((folder / "rejected").glob("*")):
        return  # rejected requests are evidence: keep the folder
    shutil.rmtree(folder, ignore_errors=True)
