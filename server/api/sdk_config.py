"""An SDK run's two configs: the script's own options (kept as given) and the declared part (validated).

The user's `config` is whatever the script has (`vars(args)`, a Hydra dict): it is stored and shown, never
refused for its keys, only for what would harm the store (not an object, too deep, too large). The
`declared` part is what the detectors and the runs list read; trainer/config.py's `DeclaredConfig` validates
it, and a 422 names each unknown or bad field.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from pydantic import ValidationError

from ganscope.server.db import Database
from ganscope.server.api.common import unprocessable
from ganscope.server.detectors.catalog import validate_overrides
from ganscope.trainer.config import declared_from_config, validate_declared

MAX_USER_CONFIG_BYTES = 256 << 10  # a script's options, not its data: far above any argparse namespace
MAX_DEPTH = 32


def user_config(raw: Any) -> tuple[dict[str, Any], str | None]:
    """(the config to store, None) or ({}, why it is refused). Non-finite numbers become strings."""
    if raw is None:
        return {}, None
    if not isinstance(raw, dict):
        return {}, f"config must be a JSON object, got {type(raw).__name__}"
    depth = _depth(raw)
    if depth > MAX_DEPTH:
        return {}, f"config is nested {depth} levels deep; at most {MAX_DEPTH}"
    clean = _finite(raw)
    size = len(orjson.dumps(clean))
    if size > MAX_USER_CONFIG_BYTES:
        return {}, f"config is {size} bytes of JSON; at most {MAX_USER_CONFIG_BYTES}"
    return clean, None


def declared_part(declared: Any, config: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The declared part to store, and notes for the client; a 422 naming each bad declared field.

    Keys of the user's config that name a declared field with a valid value are read as declared too (what
    older clients, which sent everything in `config`, meant); `declared` wins where both give a field.
    """
    if declared is None:
        declared = {}
    if not isinstance(declared, dict):
        raise unprocessable([(["body", "declared"], f"declared must be a JSON object, got {type(declared).__name__}")])
    try:
        explicit = validate_declared(declared)
    except ValidationError as exc:
        raise unprocessable([_error(e) for e in exc.errors(include_url=False)]) from None
    merged, skipped = declared_from_config(config or {}, explicit)
    merged = validate_declared(merged)
    problems = [{"loc": ["body", "declared", "detectors"], "msg": m, "type": "value_error"}
                for m in validate_overrides(merged.get("detectors") or {})]
    if problems:
        raise unprocessable(problems)
    return merged, list(skipped.values())


def forget_detector(db: Database, run_id: int) -> None:
    """Drop the run's in-memory detector state: the next batch rebuilds it from the store with the new config."""
    from ganscope.server.detectors import hook

    hook.forget(db, run_id)


def _error(e: dict[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in e.get("loc", ())]
    msg = e.get("msg", "")
    if e.get("type") == "extra_forbidden":
        msg = f"unknown declared field {'.'.join(loc)!r}: see docs/sdk.md for what a run may declare " \
              f"(put the script's own options in config)"
    return {"loc": ["body", "declared", *loc], "msg": msg, "type": e.get("type", "value_error")}


def _depth(obj: Any) -> int:
    """Nesting depth of objects and lists, iteratively (a hostile body must not exhaust the stack)."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            level += 1
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, level) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _finite(obj: Any) -> Any:
    """JSON columns (PostgreSQL's above all) refuse NaN/Infinity: keep them readable as strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if obj != obj else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
