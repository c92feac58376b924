"""The SDK's view of a script's options: whatever object holds them, as JSON; the declared part, checked.

Torch-free. The server keeps the script's options as given (never refused for their keys), so here they are
only made JSON-safe: an argparse Namespace, a dataclass, a pydantic model or an OmegaConf config become a
dict, and values JSON has no room for (paths, devices, NaN) become text.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import sys
from collections.abc import Mapping
from typing import Any

from ganscope.trainer.config import validate_declared


def check_declared(declared: Mapping[str, Any] | None) -> dict[str, Any]:
    try:
        return validate_declared(dict(declared or {}))
    except ValueError as exc:
        errs = getattr(exc, "errors", None)
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs()] if callable(errs) else [str(exc)]
        raise ValueError("declared: " + "; ".join(lines) + " (see docs/sdk.md for what a run may declare; "
                         "the script's own options go in config)") from None


def user_config(config: Any, depth: int = 0) -> dict[str, Any]:
    """The script's options as JSON: a dict, argparse Namespace, dataclass, pydantic model or OmegaConf config."""
    if config is None:
        return {}
    return _jsonable(_as_mapping(config), depth)  # type: ignore[return-value]


def _as_mapping(obj: Any) -> Any:
    if type(obj).__name__ in ("DictConfig", "ListConfig"):  # OmegaConf, without importing it
        return sys.modules["omegaconf"].OmegaConf.to_container(obj, resolve=True)
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if not isinstance(obj, Mapping) and hasattr(obj, "__dict__") and not isinstance(obj, type):
        return vars(obj)  # argparse.Namespace and plain objects
    return obj


def _jsonable(v: Any, depth: int) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, enum.Enum):
        return _jsonable(v.value, depth)
    if depth >= 16:
        return str(v)[:1000]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x, depth + 1) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy / torch scalars
        return _jsonable(v.item(), depth)
    return str(v)[:1000]  # paths, devices, dtypes, functions: readable, never refused
