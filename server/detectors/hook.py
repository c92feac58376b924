"""Placeholder seam: ingest calls process_ingest after committing points (see docs/contracts.md)."""

from __future__ import annotations

import numpy as np

from server.db import Database
from server.live import Broker


def process_ingest(db: Database, broker: Broker, run_id: int,
                   series: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    return None
