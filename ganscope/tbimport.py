"""`ganscope import tensorboard LOGDIR`: diagnose a finished (or running) training from its TensorBoard logs.

Event files are read with TensorBoard's own reader (`plugin_event_accumulator`, which also turns the
old `simple_value` scalars into the tensor form newer writers use), never a hand-written protobuf
parser. A run on the server is made per TensorBoard run — a folder of event files: several files in
one folder (a resumed training) are one run, and the subfolders `add_scalars("Loss", {"D": .., "G": ..})`
writes (`Loss_D/`, `Loss_G/`, each with tag `Loss`) join their parent's run under the tags `Loss_D`,
`Loss_G`. Tags are mapped to ganscope's metric names (trainer/tagmap.py; `--map FILE.yaml` first), the
history goes through the ordinary ingest, so the detectors judge it as if it were live, and the command
prints each run's URL and the alerts found. Re-importing the same folder adds to the same run (its key
is derived from the folder's path).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ganscope.client import DEFAULT_SERVER
from ganscope.trainer.tagmap import TagMap

EVENT_FILE = re.compile(r"events\.out\.tfevents\.")
# Among image tags, the one that most likely shows G's samples becomes the run's sample grid.
SAMPLE_TAG = re.compile(r"fake|sample|generat|g\(z\)|gen", re.IGNORECASE)

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Import other tools' logs as ganscope runs, diagnosed by the detectors.")


@dataclass
class TbRun:
    """One TensorBoard run: its folder, scalar series by tag, and PNG images by step (of one image tag)."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    scalars: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    images: dict[int, bytes] = field(default_factory=dict)
    image_tag: str | None = None


def find_event_files(logdir: Path) -> list[Path]:
    if logdir.is_file():
        return [logdir]
    return sorted(p for p in logdir.rglob("*") if p.is_file() and EVENT_FILE.search(p.name))


def read_events(path: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, bytes]]]]:
    """({tag: [(step, value)]} scalars, {tag: [(step, png)]} images) of one event file, every point kept."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(str(path), size_guidance={pea.TENSORS: 0})  # 0: keep all, no reservoir sampling
    acc.Reload()
    scalars: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, list[tuple[int, bytes]]] = {}
    for tag in acc.Tags().get(pea.TENSORS, []):
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        events = acc.Tensors(tag)
        if plugin == "scalars":
            points = []
            for ev in events:
                arr = tensor_util.make_ndarray(ev.tensor_proto)
                if arr.size == 1 and ev.step >= 0:
                    points.append((int(ev.step), float(arr.reshape(()))))
            scalars[tag] = points
        elif plugin == "images":
            # string_val = [width, height, encoded image, ...]: the first image of each event
            images[tag] = [(int(ev.step), ev.tensor_proto.string_val[2]) for ev in events
                           if len(ev.tensor_proto.string_val) > 2 and ev.step >= 0
                           and ev.tensor_proto.string_val[2].startswith(b"\x89PNG")]
    return scalars, images


def collect(logdir: Path) -> list[TbRun]:
    """TensorBoard runs under logdir, add_scalars subfolders folded into their parents."""
    runs: dict[Path, TbRun] = {}
    for path in find_event_files(logdir):
        scalars, images = read_events(path)
        folder = path.parent
        # add_scalars(main, {k: v}) writes tag `main` into folder `main_k`: fold it into the parent as `main_k`.
        child = bool(scalars) and folder != logdir and all(folder.name.startswith(t + "_") for t in scalars)
        owner = folder.parent if child else folder
        run = runs.setdefault(owner, TbRun(owner))
        run.files.append(path)
        for tag, points in scalars.items():
            series = run.scalars[folder.name if child else tag]
            for step, value in points:
                series.setdefault(step, value)  # a step written twice (a restart): the first value, as ingest
        for tag, pics in images.items():
            if run.image_tag is None or (SAMPLE_TAG.search(tag) and not SAMPLE_TAG.search(run.image_tag)):
                run.image_tag, run.images = tag, dict(pics)
    return [r for r in runs.values() if r.scalars or r.images]


def run_name(run: TbRun, logdir: Path) -> str:
    base = logdir if logdir.is_dir() else logdir.parent
    rel = run.folder.relative_to(base) if run.folder.is_relative_to(base) else run.folder
    return f"{base.resolve().name}/{rel}" if str(rel) != "." else base.resolve().name


def send(run: TbRun, logdir: Path, tags: TagMap, server: str, token: str | None, declared: dict[str, Any],
         spool: Path) -> tuple[Any, dict[str, str]]:
    """Create (or find) the run and send its history; returns (the SDK run, {tag: metric name})."""
    from ganscope.trainer import sdk

    mapping = {tag: name for tag in run.scalars if (name := tags(tag)) is not None}
    last = max((max(s) for s in run.scalars.values() if s), default=0)
    key = hashlib.sha256(str(run.folder.resolve()).encode()).hexdigest()[:32]
    config = {"source": "tensorboard", "folder": str(run.folder.resolve()),
              "files": [p.name for p in run.files], "tags": mapping}
    sdk_run = sdk.Run(server, name=run_name(run, logdir)[:200], config=config,
                      declared={"total_steps": last + 1, **declared}, token=token, spool_dir=spool,
                      heartbeat_seconds=0, quiet=True, key=key)
    if sdk_run.id is None:
        sdk_run.finish()
        raise RuntimeError(f"server {server} is not answering ({sdk_run.client.down}); nothing imported")
    merged: dict[str, dict[int, float]] = defaultdict(dict)
    for tag, name in mapping.items():
        for step, value in run.scalars[tag].items():
            merged[name].setdefault(step, value)  # two tags mapped to one name: the first tag wins
    for name, points in merged.items():
        steps = sorted(points)
        sdk_run.log_series(name, steps, [points[s] for s in steps])
    for step, png in sorted(run.images.items()):
        sdk_run.log_image(step, png)
    if not sdk_run.finish("succeeded"):
        raise RuntimeError(f"run {sdk_run.id}: not every point reached the server; see {spool}")
    return sdk_run, mapping


def settled_alerts(api: Any, run_id: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The run's alerts once the detectors have judged the last batches (they do within a second)."""
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        time.sleep(1.0)
        alerts = api.get(f"/api/runs/{run_id}/alerts")["alerts"]
        key = [(a["signature"], a["status"], a["last_step"]) for a in alerts]
        if key == previous or time.monotonic() > deadline:
            return alerts
        previous = key


@app.command("tensorboard")
def tensorboard_command(
    logdir: Annotated[Path, typer.Argument(help="A TensorBoard log folder (searched recursively) or one event file.",
                                           exists=True)],
    map_file: Annotated[Optional[Path], typer.Option(
        "--map", exists=True, dir_okay=False,
        help="YAML {tag: ganscope metric name, or null to skip} tried before the built-in names.")] = None,
    declare: Annotated[Optional[list[str]], typer.Option(
        "--declare", help="key=value of the run's declared part, e.g. loss=minimax or loss_d_reduction=mean "
                          "(docs/sdk.md); repeatable.")] = None,
    only_mapped: Annotated[bool, typer.Option(
        help="Import only tags with a ganscope name (by default other tags are imported under their own).")] = False,
    server: Annotated[str, typer.Option("--server", envvar="GANSCOPE_SERVER", help="ganscope server URL.")]
    = DEFAULT_SERVER,
    token: Annotated[Optional[str], typer.Option("--token", envvar="GANSCOPE_TOKEN", help="Bearer token.")] = None,
) -> None:
    """Import TensorBoard event files: a run per TensorBoard run, its alerts printed. Exit 0, or 1 on failure."""
    import tempfile

    import yaml

    from ganscope.client import Api

    try:
        tags = TagMap.from_yaml(map_file, keep_unmapped=not only_mapped)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        typer.echo(f"error: --map: {exc}", err=True)
        raise typer.Exit(2) from None
    declared: dict[str, Any] = {}
    for item in declare or []:
        k, sep, v = item.partition("=")
        if not sep:
            typer.echo(f"error: --declare {item!r}: expected key=value", err=True)
            raise typer.Exit(2)
        declared[k.strip()] = yaml.safe_load(v)
    from ganscope.trainer.sdk import check_declared

    try:
        check_declared(declared)
    except ValueError as exc:
        typer.echo(f"error: --declare: {exc}", err=True)
        raise typer.Exit(2) from None
    runs = collect(logdir)
    if not runs:
        typer.echo(f"error: no TensorBoard scalars under {logdir}", err=True)
        raise typer.Exit(1)
    api = Api(server, token or None)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="ganscope-tbimport-") as spool:
        for tb in runs:
            try:
                run, mapping = send(tb, logdir, tags, server, token or None, declared, Path(spool))
            except (RuntimeError, ValueError) as exc:
                typer.echo(f"{run_name(tb, logdir)}: error: {exc}", err=True)
                failed += 1
                continue
            points = sum(len(tb.scalars[t]) for t in mapping)
            renamed = ", ".join(f"{t} -> {n}" for t, n in mapping.items() if t != n) or "none"
            typer.echo(f"run {run.id} {run.url}  ({run_name(tb, logdir)}: {points} points of {len(mapping)} tags; "
                       f"renamed: {renamed})")
            alerts = settled_alerts(api, run.id)
            for a in alerts:
                typer.echo(f"  {a['signature']} ({a['severity']}) steps {a['first_step']}-{a['last_step']}: "
                           f"{a['message']}")
            if not alerts:
                typer.echo("  no failure signature found")
    raise typer.Exit(1 if failed else 0)
