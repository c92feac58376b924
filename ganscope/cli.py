"""The `ganscope` command: run the product, launch and follow jobs, read runs back.

Only `worker` and `latent` import torch (lazily, inside the command): the rest,
`serve` included, runs in the torch-free server image.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from ganscope import __version__
from ganscope.client import DEFAULT_SERVER, Api, ApiError, format_detail

app = typer.Typer(
    name="ganscope", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="GAN training diagnostics: live signals, failure signatures with evidence and remedies.",
)

ServerOpt = Annotated[str, typer.Option("--server", envvar="GANSCOPE_SERVER", help="ganscope server URL.")]
TokenOpt = Annotated[Optional[str], typer.Option(
    "--token", envvar="GANSCOPE_TOKEN", show_envvar=True,
    help="Bearer token, when the server has GANSCOPE_TOKEN set.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _api(server: str, token: str | None) -> Api:
    return Api(server, token or None)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ganscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """GAN training diagnostics: live signals, failure signatures with evidence and remedies."""


# --- running the product -----------------------------------------------------------------------

@app.command()
def up(
    home: Annotated[Path, typer.Option(envvar="GANSCOPE_HOME", help="Data folder (SQLite file, artifacts, logs).")]
    = Path("ganscope-data"),
    host: Annotated[str, typer.Option(envvar="GANSCOPE_HOST", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="GANSCOPE_PORT", help="Port to listen on.")] = 8000,
    device: Annotated[str, typer.Option(help="The worker's device: auto, cpu, cuda or cuda:N.")] = "auto",
    demo: Annotated[bool, typer.Option(
        help="Enqueue the two demo runs on `shapes` (healthy, D overpowering) unless they exist.")] = True,
    token: TokenOpt = None,
) -> None:
    """Start the server and a worker on SQLite, with two demo runs on a second worker; Ctrl-C stops them all."""
    from ganscope.up import run_up

    raise typer.Exit(run_up(home, host, port, device, demo, token or None))


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind [GANSCOPE_HOST, default 127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port [GANSCOPE_PORT, default 8000].")] = None,
    home: Annotated[Optional[Path], typer.Option(help="Data folder [GANSCOPE_HOME].")] = None,
    database_url: Annotated[Optional[str], typer.Option(
        help="SQLAlchemy URL, e.g. postgresql+psycopg://... [GANSCOPE_DATABASE_URL; default SQLite in home].")] = None,
) -> None:
    """Run the API and dashboard (uvicorn) — no worker."""
    import uvicorn

    from ganscope.server.settings import Settings

    given = {"host": host, "port": port, "home": home, "database_url": database_url}
    for key, value in given.items():
        # The environment too, so any code reading server.settings.get_settings() agrees with the flags.
        if value is not None:
            os.environ[f"GANSCOPE_{key.upper()}"] = str(value)
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    from ganscope.server.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())


@app.command()
def worker(
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    gpus: Annotated[Optional[str], typer.Option(
        envvar="GANSCOPE_GPUS",
        help="GPUs this worker owns and advertises: 0 = just --device, N = N GPUs from --device on, all = "
             "every visible GPU (a Slurm or Kubernetes allotment); it claims jobs asking for up to that many [0].")] = None,
    procs_per_job: Annotated[Optional[int], typer.Option(
        envvar="GANSCOPE_PROCS_PER_JOB", min=0,
        help="Processes per job under torchrun: N gloo ranks on CPU, N ranks on N GPUs (needs --gpus >= N); "
             "0 = one on CPU, the job's `gpus` on GPUs [0].")] = None,
    sys_every: Annotated[Optional[float], typer.Option(
        envvar="GANSCOPE_SYS_EVERY", min=0,
        help="Seconds between system samples (sys/*; 0 turns them off) [5].")] = None,
    workdir: Annotated[Optional[Path], typer.Option(
        help="Checkpoints and scratch space [$GANSCOPE_HOME/worker, else ~/.ganscope/worker].")] = None,
    spool: Annotated[Optional[Path], typer.Option(help="Requests not yet delivered [WORKDIR/spool].")] = None,
    data_root: Annotated[Optional[Path], typer.Option(envvar="GANSCOPE_DATA_ROOT",
                                                      help="Root of the datasets on disk.")] = None,
    poll: Annotated[float, typer.Option(help="Seconds between claims while idle.")] = 2.0,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Exit after one job.")] = False,
    max_jobs: Annotated[int, typer.Option(help="Exit after this many jobs (0: never).")] = 0,
    drain_timeout: Annotated[float, typer.Option(
        help="Longest wait for the server to take spooled data after a job or at exit.")] = 30.0,
    worker_id: Annotated[Optional[str], typer.Option(help="Stable id [host-pid-random].")] = None,
) -> None:
    """Train jobs claimed from a server, one at a time (on several GPUs or processes under torchrun)."""
    home = os.environ.get("GANSCOPE_HOME")
    if workdir is None and home:
        # Keep the worker's checkpoints and spool beside the rest of ganscope's data (a compose volume).
        workdir = Path(home) / "worker"
    argv = ["--server", server, "--device", device, "--poll", str(poll), "--heartbeat", str(heartbeat),
            "--max-jobs", str(max_jobs), "--drain-timeout", str(drain_timeout)]
    for flag, value in (("--token", token), ("--workdir", workdir), ("--spool", spool), ("--data-root", data_root),
                        ("--worker-id", worker_id)):
        if value:
            argv += [flag, str(value)]
    for flag, number in (("--gpus", gpus), ("--procs-per-job", procs_per_job), ("--sys-every", sys_every)):
        if number is not None:
            argv += [flag, str(number)]
    if once:
        argv.append("--once")
    from ganscope.trainer.worker import main as worker_main

    raise typer.Exit(worker_main(argv) or 0)


# --- jobs and runs -----------------------------------------------------------------------------

@app.command()
def launch(
    config_file: Annotated[Optional[Path], typer.Argument(help="Job config as YAML or JSON.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", "-s", help="Override a field: key=value (repeatable; dotted keys reach into mappings).")] = None,
    follow: Annotated[bool, typer.Option(help="Follow the run with a progress bar and its alerts.")] = True,
    interval: Annotated[float, typer.Option(help="Seconds between polls while following.")] = 1.0,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Queue a training job from a file and/or --set flags, then follow it until it ends.

    Exit status when following: 0 succeeded, 1 failed or cancelled, 3 stopped by a detector.
    """
    from ganscope.follow import follow_run
    from ganscope.jobfile import JobFileError, apply_sets, load_job_file

    try:
        config = load_job_file(config_file) if config_file else {}
        config = apply_sets(config, set_ or [])
    except JobFileError as exc:
        _fail(str(exc), 2)
    if isinstance(config, dict) and not config.get("name"):
        config["name"] = default_name(config_file, config, set_ or [])
    with _api(server, token) as api:
        try:
            run = api.post("/api/jobs", json=config)
        except ApiError as exc:
            if exc.status == 422:
                _fail("the server refused the job:\n" + format_detail(exc.detail), 2)
            _fail(str(exc))
        run_id = run["id"]
        typer.echo(f"queued run {run_id}: {api.server}/runs/{run_id}")
        if not follow:
            return
        try:
            final = follow_run(api, run_id, interval=interval)
        except KeyboardInterrupt:
            typer.echo(f"\nstopped following; run {run_id} goes on (`ganscope runs` to check on it).")
            raise typer.Exit(130)
        except ApiError as exc:
            _fail(str(exc))
    status = final.get("status")
    line = f"run {run_id} {status} at step {final.get('step')}/{final.get('total_steps')}"
    line += f", health {final.get('health')}, {final.get('alert_count', 0)} alert(s)"
    if final.get("stop_reason"):
        line += f"; stopped: {final['stop_reason']}"
    if final.get("error"):
        line += f"; error: {final['error']}"
    typer.echo(line)
    raise typer.Exit({"succeeded": 0, "stopped": 3}.get(str(status), 1))


def default_name(config_file: Path | None, config: dict[str, Any], sets: list[str]) -> str:
    """A name for a job launched without one: the file's stem (or the dataset) and the overrides given,
    e.g. "ring8 · steps=3000 lr_d=1e-3", so the runs list does not fill with "(unnamed)"."""
    base = config_file.stem if config_file else str(config.get("dataset") or "shapes")
    extras = " ".join(item.strip() for item in sets if not item.strip().startswith(("name=", "dataset=")))
    return (f"{base} · {extras}" if extras else base)[:200]


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


@app.command()
def runs(
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's JSON instead of a table.")] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """List runs: id, status, health, progress, dataset, alerts."""
    with _api(server, token) as api:
        try:
            data = api.get("/api/runs")
        except ApiError as exc:
            _fail(str(exc))
    items: list[dict[str, Any]] = data.get("runs", []) if isinstance(data, dict) else data
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    if not items:
        typer.echo("no runs yet: `ganscope launch --set steps=500` queues one.")
        return
    rows = []
    for r in items:
        name = str(r.get("name") or "")
        rows.append([str(r.get("id")), name if len(name) <= 32 else name[:31] + "…", str(r.get("status")),
                     "-" if r.get("status") == "queued" else str(r.get("health")),
                     f"{r.get('step', 0)}/{r.get('total_steps', 0)}",
                     str(r.get("dataset") or ""), str(r.get("open_alerts", r.get("alert_count", 0))),
                     str(r.get("created_at") or "")[:19].replace("T", " ")])
    typer.echo(_table(rows, ["ID", "NAME", "STATUS", "HEALTH", "STEP", "DATASET", "ALERTS", "CREATED"]))


@app.command()
def export(
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="Run id.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv (metric,step,value rows) or json.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write; stdout if omitted.")]
    = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Write every metric of a run at full resolution (no downsampling) as CSV or JSON."""
    from ganscope.export import fetch_all, write_csv, write_json

    if fmt not in ("csv", "json"):
        _fail(f"--format must be csv or json, got {fmt!r}", 2)
    with _api(server, token) as api:
        try:
            run, metrics = fetch_all(api, run_id)
        except ApiError as exc:
            _fail(str(exc))
    out = open(output, "w", newline="") if output else sys.stdout
    try:
        (write_csv if fmt == "csv" else write_json)(run, metrics, out)
    finally:
        if output:
            out.close()
    if output:
        points = sum(len(m["steps"]) for m in metrics.values())
        typer.echo(f"wrote {len(metrics)} metrics, {points} points to {output}", err=True)


@app.command()
def latent(
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="Run id.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs [./latent-RUN].")]
    = None,
    steps: Annotated[int, typer.Option(help="Frames per interpolation / walk row.")] = 10,
    dims: Annotated[str, typer.Option(help="Latent dimensions to walk, comma-separated.")] = "0,1,2",
    span: Annotated[float, typer.Option(help="Walk from -span to +span along each dimension.")] = 3.0,
    samples: Annotated[int, typer.Option(help="Random samples in samples.png.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for z.")] = 0,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Download a run's latest checkpoint and write latent interpolation and walk PNGs."""
    try:
        dim_list = [int(d) for d in dims.split(",") if d.strip()]
    except ValueError:
        _fail(f"--dims must be comma-separated integers, got {dims!r}", 2)
    out_dir = out_dir or Path(f"latent-{run_id}")
    with _api(server, token) as api:
        try:
            resp = api.request("GET", f"/api/runs/{run_id}/checkpoints/latest")
        except ApiError as exc:
            if exc.status == 404:
                _fail(_no_checkpoint(api, run_id))
            _fail(str(exc))
    step = resp.headers.get("x-ganscope-step", "latest")
    from ganscope.trainer import samples as tsamples  # torch: only now

    # The checkpoint is read from a temporary file: --out receives the pictures only.
    with tempfile.TemporaryDirectory(prefix="ganscope-latent-") as tmp:
        ckpt = Path(tmp) / f"run{run_id}-step{step}.pt"
        ckpt.write_bytes(resp.content)
        try:
            generator = tsamples.load_generator(ckpt)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: say so, no traceback
            _fail(f"cannot load the checkpoint of run {run_id} (step {step}): {exc}")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"samples.png": lambda g: tsamples.random_samples_png(g, samples, seed)}
    # Interpolations and walks are pictures of images: a toy generator gets its scatter only.
    if not generator.cfg.is_toy:
        figures["interpolation.png"] = lambda g: tsamples.interpolation_png(g, steps, seed)
        for d in dim_list:
            figures[f"walk-dim{d}.png"] = lambda g, d=d: tsamples.latent_walk_png(g, d, steps, span, seed)
    try:
        for name, draw in figures.items():
            (out_dir / name).write_bytes(draw(generator))
    except (ValueError, IndexError, RuntimeError) as exc:
        _fail(f"cannot draw from run {run_id}'s generator: {exc}")
    typer.echo(f"run {run_id}, checkpoint at step {step}: wrote {', '.join(figures)} to {out_dir}")


def _no_checkpoint(api: Api, run_id: int) -> str:
    """Why a run has no checkpoint to draw from, in one line."""
    try:
        run = api.get(f"/api/runs/{run_id}")
    except ApiError as exc:
        return f"run {run_id}: {format_detail(exc.detail).strip() or exc}"
    if run.get("kind") == "sdk":
        return f"run {run_id} was logged with the SDK: it has no checkpoints on the server to draw from"
    every = (run.get("config") or {}).get("checkpoint_every")
    when = f"every {every} steps and at the end" if every else "periodically and at the end"
    return (f"run {run_id} has no checkpoint yet (it is {run.get('status')} at step {run.get('step', 0)}; "
            f"workers write one {when}): try again later")


from ganscope.tbimport import app as _import_app  # noqa: E402 - `ganscope import tensorboard LOGDIR`

app.add_typer(_import_app, name="import")


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="ganscope")
