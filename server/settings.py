"""Server settings, loaded once from the environment (GANSCOPE_*)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ganscope.trainer.config import Limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANSCOPE_", extra="ignore")

    home: Path = Field(Path("./ganscope-data"), description="Folder for the SQLite file and artifacts.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset means SQLite at $GANSCOPE_HOME/ganscope.db.")
    token: str | None = Field(None, description="When set, state-changing calls need 'Authorization: Bearer <token>'.")
    host: str = Field("127.0.0.1", description="Address the server binds (loopback unless told otherwise).")
    port: int = Field(8000, description="Port the server listens on.")
    data_root: Path | None = Field(
        None, description="Root every dataset path is confined to; unset means $GANSCOPE_HOME/datasets.")
    max_request_mb: float = Field(32.0, description="Largest JSON request body accepted, in MiB (413 beyond).")
    max_upload_mb: float = Field(2048.0, description="Largest checkpoint/sample upload accepted, in MiB.")
    max_batch_size: int = Field(1024, description="Largest batch_size a job may ask for.")
    max_image_size: int = Field(128, description="Largest image_size a job may ask for.")
    max_steps: int = Field(10_000_000, description="Most steps a job may ask for.")
    stall_seconds: float = Field(60.0, description="A running job whose worker is silent this long is requeued.")
    sdk_stall_seconds: float = Field(
        3600.0, description="An SDK run with no data nor heartbeat this long is marked failed.")
    sdk_heartbeat_seconds: float = Field(
        30.0, description="An SDK run whose script sends heartbeats (every 10 s) and then goes silent this "
                          "long is marked failed: the script was killed.")
    detectors: str = Field("on", description="'off' skips failure detectors on ingest (benchmarks, debugging).")
    log_level: str = Field("info", description="Server log level.")

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
