"""Strict types on the wire: JSON booleans are not integers, numeric strings are not numbers.

pydantic's lax mode turns `true` into 1 and `"5"` into 5; for a step number or a queue priority that
hides a client bug (or lets a fuzzer's `false` rewind a run to step 0). WireInt refuses both; bool_ints
finds booleans sent for a model's integer fields without making the whole model strict (strict mode
would also refuse the JSON strings that enums and dates arrive as).
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, Strict

WireInt = Annotated[int, Strict()]  # an integer and nothing else: not true/false, not "3", not 3.0


def _is_int_field(annotation: Any) -> bool:
    if annotation is int:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _is_int_field(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_is_int_field(a) for a in args)
    return False


def bool_ints(model: type[BaseModel], data: dict[str, Any]) -> list[dict[str, Any]]:
    """422 entries for top-level fields of `model` typed int that were sent a JSON boolean."""
    out = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if isinstance(data.get(key), bool) and _is_int_field(field.annotation):
            out.append({"loc": ["body", key], "type": "int_type",
                        "msg": f"{key} must be an integer, not a boolean ({str(data[key]).lower()})"})
    return out


def bad_metric_values(values: list[Any]) -> bool:
    """Whether a metric value list holds anything but numbers, null and "nan"/"inf"/"-inf" (the contract)."""
    for v in values:
        if v is None or (type(v) in (int, float)):
            continue
        if isinstance(v, str) and v in ("nan", "inf", "-inf"):
            continue
        return True
    return False
