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


# --- every status a route can answer is declared in the OpenAPI (schemathesis checks it) --------------

_CHANGING = ("post", "put", "patch", "delete")
_ERROR_SCHEMA = {"title": "Error", "type": "object", "required": ["detail"], "properties": {"detail": {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
    "description": "What is wrong: a sentence, or one {loc, msg, type} per bad field."}}}
_ALWAYS = {"400": "Host header not one this server answers to (GANSCOPE_ALLOWED_HOSTS)",
           "422": "Invalid input: each bad field named (also NUL characters, lone surrogates, JSON nesting)",
           "503": "Storage unavailable or full: retry later (Retry-After)"}
_ON_PATH_IDS = {"404": "Unknown run or item (ids go up to 2^31-1)"}
_ON_CHANGES = {"401": "Missing or wrong token (GANSCOPE_TOKEN)",
               "403": "Cross-site request refused (Origin / Sec-Fetch-Site)",
               "409": "The change does not apply in the run's current state",
               "413": "Body over the server's size limit",
               "415": "Content type not accepted (send application/json; uploads as image/png or octet-stream)"}


def declare_errors(app: Any) -> None:
    """Add the error answers the middlewares and handlers give to every operation of app.openapi()."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = build()
        spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, ops in spec.get("paths", {}).items():
            for method, op in ops.items():
                codes = dict(_ALWAYS)
                if "{" in path:
                    codes.update(_ON_PATH_IDS)
                if method in _CHANGING:
                    codes.update(_ON_CHANGES)
                responses = op.setdefault("responses", {})
                for code, text in codes.items():
                    if code not in responses:
                        responses[code] = {"description": text, "content": ref}
        app.openapi_schema = spec
        return spec

    app.openapi = openapi
