"""Job configs for `ganscope launch`: a YAML/JSON file plus `--set key=value` overrides.

The server is the authority on what a valid job is (it answers 422 naming each
bad field); here we only turn text into the JSON types a person meant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ganscope.trainer.config import JobConfig


class JobFileError(ValueError):
    pass


def load_job_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise JobFileError(f"cannot read job file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise JobFileError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise JobFileError(f"{path} must hold a mapping of job fields, got {type(data).__name__}")
    return data


def _string_fields() -> set[str]:
    """Fields whose JSON type is text: their --set values stay verbatim (name=123 is a name, not a number)."""
    out = set()
    for name, prop in JobConfig.model_json_schema()["properties"].items():
        kinds = [prop] + prop.get("anyOf", [])
        if any(k.get("type") == "string" for k in kinds):
            out.add(name)
    return out


def parse_value(text: str) -> Any:
    """`true`, `null`, `[1, 2]`, `3`, `2e-4` as YAML/JSON would read them; anything else stays text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # YAML 1.1 reads "2e-4" (no dot) as a string; a learning rate is a number.
        try:
            return float(text)
        except ValueError:
            return text
    return value


def apply_sets(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `key=value` (dotted keys reach into mappings: detectors.mode_collapse.window=200)."""
    strings = _string_fields()
    out = dict(config)
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise JobFileError(f"--set expects key=value, got {item!r}")
        parts = key.split(".")
        value: Any = raw if (len(parts) == 1 and key in strings) else parse_value(raw)
        target = out
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
            target[part] = nxt = dict(nxt)
            target = nxt
        target[parts[-1]] = value
    return out
