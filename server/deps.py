"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from ganscope.server.db import Database
from ganscope.server.live import Broker
from ganscope.server.settings import Settings


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_broker(request: Request) -> Broker:
    return request.app.state.broker


DB = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BrokerDep = Annotated[Broker, Depends(get_broker)]

# Path ids and steps fit a signed 64-bit column: larger numbers are a client error (422), not an overflow.
MAX_INT64 = 2**63 - 1
# Ids are 32-bit INTEGER columns (server/inputs.py says why they are bounded rather than widened).
MAX_ID = 2**31 - 1
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="Run id.")]
StepParam = Annotated[int, Path(ge=0, le=MAX_INT64, description="Training step.")]
