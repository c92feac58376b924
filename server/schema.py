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
    UniqueConstraint, false,
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
    # SDK runs (migration 0005): `config` holds only what the script declared (the detectors read it);
    # the script's own options are kept here as given, never interpreted.
    user_config: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    client_key: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the SDK's idempotent creation key
    # True once the script sent a heartbeat: its silence then means it died (queue.recover_stalled).
    sdk_heartbeats: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        # claim: WHERE status='queued' ORDER BY priority DESC, id  (the worker's atomic claim)
        Index("ix_runs_queue", "status", "priority", "id"),
        # stalled-job recovery: WHERE status='running' AND heartbeat_at < now - T
        Index("ix_runs_running_heartbeat", "status", "heartbeat_at"),
        # runs list: ORDER BY created_at DESC
        Index("ix_runs_created", "created_at"),
        # SDK creation retried (offline spool replay): WHERE client_key=?; unique, NULLs allowed
        Index("ix_runs_client_key", "client_key", unique=True),
    )


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
    # a run's alerts and its open ones: WHERE run_id=? [AND status='open']
    __table_args__ = (Index("ix_alerts_run_status", "run_id", "status"),)


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(200), default="")
    devices: Mapped[list] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
