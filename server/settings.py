"""Server settings, loaded once from the environment (GANSCOPE_*)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ganscope.server.notify.events import EVENTS
from ganscope.trainer.config import Limits, parse_notify_target


def _split_list(v: object) -> object:
    """Comma- or whitespace-separated in the environment; a list when given in Python."""
    if isinstance(v, str):
        return [x for x in v.replace(",", " ").split() if x]
    return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANSCOPE_", extra="ignore")

    home: Path = Field(Path("./ganscope-data"), description="Folder for the SQLite file and artifacts.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset means SQLite at $GANSCOPE_HOME/ganscope.db.")
    token: str | None = Field(None, description="When set, state-changing calls need 'Authorization: Bearer <token>'.")
    host: str = Field("127.0.0.1", description="Address the server binds (loopback unless told otherwise).")
    port: int = Field(8000, description="Port the server listens on.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Host names the server answers to (comma-separated; '*' = any). Unset: "
                                          "127.0.0.1, localhost and ::1 when bound to loopback, any otherwise.")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Other page origins (https://host[:port]) trusted to make state-changing "
                                          "calls, e.g. the address a reverse proxy serves the dashboard at.")
    data_root: Path | None = Field(
        None, description="Root every dataset path is confined to; unset means $GANSCOPE_HOME/datasets.")
    max_request_mb: float = Field(32.0, description="Largest JSON request body accepted, in MiB (413 beyond).")
    max_upload_mb: float = Field(2048.0, description="Largest checkpoint/sample upload accepted, in MiB.")
    max_batch_size: int = Field(1024, description="Largest batch_size a job may ask for.")
    max_image_size: int = Field(128, description="Largest image_size a job may ask for.")
    max_steps: int = Field(10_000_000, description="Most steps a job may ask for.")
    keep_checkpoints: int = Field(
        5, ge=0, description="Checkpoints kept per run: the newest K plus, per alert, the newest before its "
                             "onset (where a rollback resumes); 0 keeps all.")
    keep_samples: int = Field(
        2000, ge=0, description="Sample images kept per run and kind; beyond, older ones are thinned so the "
                                "timeline still spans the run (the newest half stay dense); 0 keeps all.")
    reserve_mb: float = Field(
        32.0, ge=0, description="Free space kept on the data disk for run status: below it, metrics, images, "
                                "snapshots and checkpoints answer 503 (the worker spools them) while heartbeats, "
                                "stops and final statuses still write; 0 turns the reserve off.")
    stall_seconds: float = Field(60.0, description="A running job whose worker is silent this long is requeued.")
    sdk_stall_seconds: float = Field(
        3600.0, description="An SDK run with no data nor heartbeat this long is marked failed.")
    sdk_heartbeat_seconds: float = Field(
        30.0, description="An SDK run whose script sends heartbeats (every 10 s) and then goes silent this "
                          "long is marked failed: the script was killed.")
    detectors: str = Field("on", description="'off' skips failure detectors on ingest (benchmarks, debugging).")
    log_level: str = Field("info", description="Server log level.")

    # --- workers past one GPU and notifications (README "Scaling out", docs/notifications.md) ---
    worker_sys_keep_minutes: float = Field(
        60.0, gt=0, le=7 * 24 * 60, description="How long each worker's system samples are kept (GET /api/workers).")
    notify_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Webhook URLs told of every event (comma-separated); prefix slack+, "
                                          "discord+ or json+ to choose a URL's format.")
    notify_secret: str | None = Field(
        None, description="When set, server-wide webhook bodies carry X-Ganscope-Signature: sha256=HMAC(body).")
    notify_format: Literal["auto", "json", "slack", "discord"] = Field(
        "auto", description="Body of server-wide webhooks: auto = Slack/Discord text for their hosts, JSON else.")
    notify_events: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(EVENTS), description="Events that notify (comma-separated); default all.")
    notify_base_url: str | None = Field(
        None, description="The dashboard's address as readers reach it (http://host:8000): messages link to runs.")
    notify_timeout: float = Field(10.0, gt=0, le=300, description="Seconds one webhook attempt may take.")
    notify_attempts: int = Field(5, ge=1, le=20, description="Tries per delivery before it is marked failed.")
    notify_backoff: float = Field(
        1.0, gt=0, le=60, description="Seconds before the first retry; doubles each time (at most 60 s).")
    notify_queue: int = Field(
        1000, ge=1, le=1_000_000, description="Deliveries waiting per sender lane; beyond, new ones are dropped.")

    @field_validator("notify_urls", "notify_events", "allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _lists(cls, v: object) -> object:
        return _split_list(v)

    @field_validator("notify_urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            parse_notify_target(url)  # ValueError names the bad URL
        return list(dict.fromkeys(v))

    @field_validator("notify_events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e not in EVENTS]
        if bad:
            raise ValueError(f"unknown notification event(s) {', '.join(bad)}; known: {', '.join(EVENTS)}")
        return v

    @field_validator("notify_base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"notify_base_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/") if v else None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'ganscope.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def artifacts_dir(self) -> Path:
        return (self.home / "artifacts").resolve()

    @property
    def datasets_dir(self) -> Path:
        return (self.data_root or self.home / "datasets").resolve()

    @property
    def limits(self) -> Limits:
        return Limits(max_batch_size=self.max_batch_size, max_image_size=self.max_image_size,
                      max_steps=self.max_steps)


@lru_cache
def get_settings() -> Settings:
    return Settings()
