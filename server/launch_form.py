"""The launch form's fields, grouped and marked with the datasets they apply to, from the job schema.

Data-driven so a knob added to trainer/config.py lands somewhere sensible with no change here:

* group: a field's own `json_schema_extra={"group": ...}` wins; else the name table below; else a
  name pattern (`*_every` is reporting, `lr_*` optimisation, ...); else "other".
* applies: `json_schema_extra={"applies": "image" | "toy" | "disk" | "finite"}` wins; else the table;
  else the knob applies to every dataset. The page hides knobs that do not apply to the chosen dataset.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ganscope.trainer.config import DISK_DATASETS, IMAGE_DATASETS, TOY_1D_DATASETS, TOY_2D_DATASETS, knob_catalog

GROUPS: tuple[tuple[str, str, str], ...] = (
    ("data", "Data", "what to learn, and the run's name"),
    ("networks", "Networks", "G and D architecture"),
    ("optimisation", "Optimisation", "loss, optimiser, batch, length"),
    ("tricks", "Stabilising tricks", "regularisers and GAN tricks, off by default"),
    ("reporting", "Reporting", "how often to measure, sample, evaluate and checkpoint"),
    ("hardware", "Hardware and reproducibility", "device, precision, seed"),
    ("policy", "Failure policy and queue", "what a detected failure does; queue priority"),
    ("other", "Other knobs", "knobs without a group yet"),
)
_GROUP_IDS = {g[0] for g in GROUPS}

GROUP_OF = {
    "name": "data", "dataset": "data", "data_root": "data",
    "image_size": "networks", "nz": "networks", "ngf": "networks", "ndf": "networks", "d_downsample": "networks",
    "batch_norm": "networks", "bn_momentum": "networks", "g_act": "networks", "d_act": "networks",
    "leaky_slope": "networks", "init": "networks", "init_std": "networks", "minibatch_disc": "networks",
    "toy_hidden": "networks", "toy_layers": "networks",
    "loss": "optimisation", "batch_size": "optimisation", "d_steps": "optimisation", "g_steps": "optimisation",
    "steps": "optimisation", "epochs": "optimisation", "gp_weight": "optimisation",
    "label_smoothing": "tricks", "fm_weight": "tricks", "fm_warmup_steps": "tricks", "spectral_norm": "tricks",
    "r1_gamma": "tricks", "r1_every": "tricks", "ema_g": "tricks", "diffaugment": "tricks",
    "seed": "hardware", "device": "hardware", "amp": "hardware", "channels_last": "hardware",
    "on_failure": "policy", "max_heals": "policy", "detectors": "policy", "priority": "policy",
    "max_attempts": "policy",
}
GROUP_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"_every$|^flush_", "reporting"), (r"^(lr|beta)", "optimisation"), (r"^toy_", "networks"),
    (r"^(on_|max_)", "policy"),
)

# Knobs that mean something for some datasets only (trainer/models.py, trainer/loop.py).
APPLIES = {
    "image_size": "image", "ngf": "image", "ndf": "image", "d_downsample": "image", "batch_norm": "image",
    "bn_momentum": "image", "sample_every": "image", "channels_last": "image", "eval_every": "image",
    "diffaugment": "image", "toy_hidden": "toy", "toy_layers": "toy", "toy_every": "toy",
    "data_root": "disk", "epochs": "finite",
}

DATASET_KINDS = {
    "image": list(IMAGE_DATASETS), "toy": list(TOY_2D_DATASETS + TOY_1D_DATASETS), "disk": list(DISK_DATASETS),
    # epochs needs a dataset of fixed length: the disk sets and the procedural shapes set.
    "finite": list(DISK_DATASETS) + ["shapes"],
}


def group_of(name: str, schema: dict[str, Any]) -> str:
    tagged = schema.get("group")
    if isinstance(tagged, str) and tagged in _GROUP_IDS:
        return tagged
    if name in GROUP_OF:
        return GROUP_OF[name]
    for pattern, group in GROUP_PATTERNS:
        if re.search(pattern, name):
            return group
    return "other"


def applies_to(name: str, schema: dict[str, Any]) -> str:
    tagged = schema.get("applies")
    if isinstance(tagged, str) and tagged in DATASET_KINDS:
        return tagged
    return APPLIES.get(name, "all")


def field_kind(schema: dict[str, Any]) -> tuple[str, bool]:
    """Input kind for a knob (select, bool, integer, number, string, list, json) and whether null is allowed."""
    nullable = False
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        schema = {**schema, **(options[0] if options else {})}
    if "enum" in schema:
        return "select", nullable
    if "const" in schema:
        return "select", nullable
    kind = schema.get("type", "string")
    if kind == "boolean":
        return "bool", nullable
    if kind in ("integer", "number"):
        return kind, nullable
    if kind == "object":
        return "json", nullable
    if kind == "array" and schema.get("items", {}).get("type") == "string":
        return "list", nullable  # one entry per line or comma (webhook URLs)
    if kind == "array":
        return "json", nullable
    return "string", nullable


def _options(schema: dict[str, Any]) -> list[Any]:
    for s in [schema, *schema.get("anyOf", [])]:
        if "enum" in s:
            return list(s["enum"])
    return []


def launch_fields() -> list[dict[str, Any]]:
    fields = []
    for knob in knob_catalog():
        schema = knob["schema"]
        kind, nullable = field_kind(schema)
        default = knob["default"]
        if kind == "json" and default is None:
            default = {}
        bounds = [f"{label} {schema[key]}" for key, label in
                  (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
                  if key in schema]
        fields.append({
            "name": knob["name"], "kind": kind, "nullable": nullable, "help": knob["help"],
            "options": _options(schema), "default": default,
            "default_text": (json.dumps(default) if kind in ("json", "bool")
                             else ", ".join(default or []) if kind == "list"
                             else "" if default is None else str(default)),
            "bounds": ", ".join(bounds), "group": group_of(knob["name"], schema),
            "applies": applies_to(knob["name"], schema),
        })
    return fields


def grouped_fields() -> list[dict[str, Any]]:
    """[{id, title, blurb, fields}] in GROUPS order, empty groups left out; fields keep the schema's order."""
    fields = launch_fields()
    return [{"id": gid, "title": title, "blurb": blurb, "fields": [f for f in fields if f["group"] == gid]}
            for gid, title, blurb in GROUPS if any(f["group"] == gid for f in fields)]
