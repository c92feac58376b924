"""Tables. Every index says which query it serves.

Metrics are stored as chunks: one row holds up to CHUNK_POINTS consecutive
points of one (run, metric) as packed little-endian int64 steps and float64
values. Appends touch one row per metric per batch instead of one row per
point, and a 1,000,000-point history is a few hundred rows to read.
Non-finite values are stored as IEEE NaN/Inf inside the blob. Evenly spaced
steps (the usual case) are implied: an empty steps blob means first_step to
last_step in n equal strides (server/store/metrics.py keeps the invariants).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
    UniqueConstraint, false as sa_false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CHUNK_POINTS = 2048  # measured: 4096 costs ingest ~12% more CPU (bigger tail rewrites), 1024 costs reads ~20%


class Base(DeclarativeBase):
    pass


class Run(Base):
    """A job launched over REST (kind 'job', trained by a worker) or a run logged by the SDK (kind 'sdk')."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(8), default="job")
    config: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|succeeded|failed|cancelled|stopped
    health: Mapped[str] = mapped_column(String(16), default="healthy")  # healthy|warning|failing
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    step: Mapped[int] = mapped_column(BigInteger, default=0)  # highest step ingested or reported
    total_steps: Mapped[int] = mapped_column(BigInteger, default=0)
    checkpoint_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # resume point
    control: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None|'cancel'|'stop': told at heartbeat
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="", server_default="")  # the user's free-text annotation
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())  # hidden from the list
    # SDK runs (migration 0005): `config` holds only what the script declared (the detectors read it);
    # the script's own options are kept here as given, never interpreted.
    user_config: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    client_key: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the SDK's idempotent creation key
    # True once the script sent a heartbeat: its silence then means it died (queue.recover_stalled).
    sdk_heartbeats: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())

    __table_args__ = (
        # claim: WHERE status='queued' ORDER BY priority DESC, id  (the worker's atomic claim)
        Index("ix_runs_queue", "status", "priority", "id"),
        # stalled-job recovery: WHERE status='running' AND heartbeat_at < now - T
        Index("ix_runs_running_heartbeat", "status", "heartbeat_at"),
        # runs list: ORDER BY created_at DESC
        Index("ix_runs_created", "created_at"),
        # runs list without archived runs (the default): WHERE archived = false ORDER BY created_at DESC
        Index("ix_runs_archived_created", "archived", "created_at"),
        # SDK creation retried (offline spool replay): WHERE client_key=?; unique, NULLs allowed
        Index("ix_runs_client_key", "client_key", unique=True),
    )


class RunTag(Base):
    """A user's label on a run (many per run)."""

    __tablename__ = "run_tags"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    # the primary key serves a run's tags (WHERE run_id IN (..)); this one the tag filter: WHERE tag = ?
    __table_args__ = (Index("ix_run_tags_tag", "tag", "run_id"),)


class RunClock(Base):
    """When the server took in a run's steps: one row per ingested batch (at most every CLOCK_EVERY_S),
    its highest step and the server's time. Charts plot against wall or relative time from these."""

    __tablename__ = "run_clock"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    t: Mapped[float] = mapped_column(Float)  # seconds since the Unix epoch (UTC)
    # the primary key serves the only read: WHERE run_id = ? ORDER BY step


class MetricChunk(Base):
    __tablename__ = "metric_chunks"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    first_step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)
    n: Mapped[int] = mapped_column(Integer)
    steps: Mapped[bytes] = mapped_column(LargeBinary)  # int64 little-endian, strictly increasing; b"" = evenly spaced
    values: Mapped[bytes] = mapped_column(LargeBinary)  # float64 little-endian, NaN/Inf kept

    __table_args__ = (
        # history and range reads: WHERE run_id=? AND name IN (..) [AND last_step>=? AND first_step<=?]
        #   ORDER BY name, last_step (chunks are disjoint, so last_step order is step order; first_step
        #   sits in the index so a zoomed read filters without touching the blobs);
        # ingest's tail lookup: WHERE run_id=? AND (name, last_step) IN ((?, ?), ...)
        Index("ix_chunks_run_name_last", "run_id", "name", "last_step", "first_step"),
    )


class MetricLatest(Base):
    """Last value and point count per (run, metric): run pages and the runs list read only this."""

    __tablename__ = "metric_latest"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # NULL when non-finite
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    nonfinite: Mapped[int] = mapped_column(BigInteger, default=0)


class Sample(Base):
    """A PNG under the artifacts folder: fixed-z grid (kind 'grid') or other images."""

    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32), default="grid")
    path: Mapped[str] = mapped_column(Text)  # relative to the artifacts folder
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # sample timeline: WHERE run_id=? ORDER BY step; idempotent re-upload on (run, step, kind)
    __table_args__ = (UniqueConstraint("run_id", "step", "kind", name="uq_samples_run_step_kind"),)


class Snapshot(Base):
    """JSON snapshots for plots that are not time series: toy densities / scatters."""

    __tablename__ = "snapshots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32), default="toy")
    payload: Mapped[dict] = mapped_column(JSON)
    # latest / at-step snapshot: WHERE run_id=? AND kind=? ORDER BY step DESC
    __table_args__ = (UniqueConstraint("run_id", "kind", "step", name="uq_snapshots_run_kind_step"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(Text)  # relative to the artifacts folder
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # resume: WHERE run_id=? ORDER BY step DESC LIMIT 1
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_checkpoints_run_step"),)


class Alert(Base):
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    signature: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))  # warning|failing
    status: Mapped[str] = mapped_column(String(16), default="open")  # open|closed
    first_step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict] = mapped_column(JSON)
    remedy: Mapped[dict] = mapped_column(JSON)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    __table_args__ = (
        # a run's alerts and its open ones: WHERE run_id=? [AND status='open']
        Index("ix_alerts_run_status", "run_id", "status"),
        # alerts across runs for pollers: WHERE (updated_at, id) > (?, ?) ORDER BY updated_at, id
        Index("ix_alerts_updated", "updated_at", "id"),
    )


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(200), default="")
    devices: Mapped[list] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[str] = mapped_column(String(40), default="", server_default="")  # ganscope version it runs
    # The worker's latest system sample ({"sys/cpu_pct": 12.5, ...}, docs/metrics.md) and when it came.
    sys: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    sys_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WorkerSysSample(Base):
    """A worker's system samples over the last GANSCOPE_WORKER_SYS_KEEP_MINUTES (older rows are pruned)."""

    __tablename__ = "worker_sys"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the run it was training, if any
    values: Mapped[dict] = mapped_column(JSON)  # {"sys/cpu_pct": 12.5, ...}; null where non-finite
    # a worker's series and its pruning: WHERE worker_id=? AND at >= ? ORDER BY at / DELETE ... AND at < ?
    __table_args__ = (Index("ix_worker_sys_worker_at", "worker_id", "at"),)


class Notification(Base):
    """One webhook delivery: an event (alert opened, run failed, ...) sent to one target URL."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=True)
    alert_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    event: Mapped[str] = mapped_column(String(32))  # alert.opened | alert.escalated | run.failed | ...
    scope: Mapped[str] = mapped_column(String(8))  # server (GANSCOPE_NOTIFY_URLS) | job (the job's `notify`)
    target: Mapped[str] = mapped_column(String(300))  # redacted: scheme://host/... and a fingerprint
    format: Mapped[str] = mapped_column(String(8))  # json | slack | discord
    status: Mapped[str] = mapped_column(String(12))  # sending | retrying | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # of the last attempt
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why the last attempt failed
    payload: Mapped[dict] = mapped_column(JSON)  # the generic JSON body (chat formats are rendered from it)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # a run's deliveries: WHERE run_id=? ORDER BY id (the listing across runs walks the primary key)
    __table_args__ = (Index("ix_notifications_run", "run_id", "id"),)


class RunEvent(Base):
    """Something done to a run while it trained: a heal (on_failure: heal) rolling it back and patching its config.

    A heal is `pending` from the moment the server decides it (runs.control = 'heal') until the worker
    reports where it resumed (`applied_at`, `rollback_step`)."""

    __tablename__ = "run_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # heal
    step: Mapped[int] = mapped_column(BigInteger)  # the run's step when it was decided (the alert's last step)
    signature: Mapped[str | None] = mapped_column(String(64), nullable=True)
    alert_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    onset_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # roll back to a checkpoint before it
    from_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # where the worker left the old branch
    rollback_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the checkpoint it resumed from
    changes: Mapped[list] = mapped_column(JSON)  # [{"knob", "from", "to"}]
    config: Mapped[dict] = mapped_column(JSON)  # the JobConfig diff applied (with remedy_of)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # a run's events, its pending heal and its heal count: WHERE run_id=? [AND kind=?] ORDER BY id
    __table_args__ = (Index("ix_run_events_run", "run_id", "id"),)
