"""HTML pages: runs list, one run, compare, launch. Thin shells: their data comes from the JSON API.

Every page fetches the same JSON a script would (`/api/runs`, `/api/runs/{id}`,
`.../metrics`, ...), so nothing shown here is out of reach of the REST API.
The launch form is rendered from `trainer.config.knob_catalog()`, the schema the
server validates jobs with. plotly.js is served from the installed plotly
package: the dashboard makes no request off this machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from ganscope.server.deps import DB
from ganscope.server.schema import Run
from ganscope.trainer.config import JobConfig, knob_catalog

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=str(ROOT / "templates"))  # autoescape on for .html
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
# Bumped with the JS/CSS so browsers do not keep a stale script after an upgrade.
ASSET_VERSION = "1"

router = APIRouter(include_in_schema=False)


def _render(request: Request, template: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("asset_version", ASSET_VERSION)
    ctx.setdefault("token_required", bool(request.app.state.settings.token))
    return TEMPLATES.TemplateResponse(request, template, ctx, status_code=status_code)


@router.get("/static/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    # Registered before the /static mount, so this route wins; the file is the package's own copy.
    return FileResponse(PLOTLY_JS, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request) -> HTMLResponse:
    return _render(request, "runs.html", page="runs")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: int, request: Request, db: DB) -> HTMLResponse:
    with db.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            return _render(request, "notfound.html", page="run", run_id=run_id, status_code=404)
        name = run.name
    # The name goes into <title> through autoescaping; the rest is fetched as JSON by the page.
    # A list of pairs, not a dict: tojson sorts dict keys and the config table keeps the schema's order.
    defaults = list(JobConfig().model_dump(mode="json").items())
    return _render(request, "run.html", page="run", run_id=run_id, run_name=name, defaults=defaults)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, ids: str = "") -> HTMLResponse:
    run_ids = [int(p) for p in ids.replace(" ", "").split(",") if p.isdigit()]
    return _render(request, "compare.html", page="compare", run_ids=run_ids)


def _field_kind(schema: dict[str, Any]) -> tuple[str, bool]:
    """Input kind for a knob (select, bool, integer, number, string, json) and whether null is allowed."""
    nullable = False
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        schema = {**schema, **(options[0] if options else {})}
    if "enum" in schema:
        return "select", nullable
    kind = schema.get("type", "string")
    if kind == "boolean":
        return "bool", nullable
    if kind in ("integer", "number"):
        return kind, nullable
    if kind == "object":
        return "json", nullable
    return "string", nullable


def launch_fields() -> list[dict[str, Any]]:
    fields = []
    for knob in knob_catalog():
        schema = knob["schema"]
        kind, nullable = _field_kind(schema)
        default = knob["default"]
        if kind == "json" and default is None:
            default = {}
        bounds = [f"{label} {schema[key]}" for key, label in
                  (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
                  if key in schema]
        fields.append({
            "name": knob["name"], "kind": kind, "nullable": nullable, "help": knob["help"],
            "options": schema.get("enum", []),
            "default": default,
            "default_text": (json.dumps(default) if kind in ("json", "bool")
                             else "" if default is None else str(default)),
            "bounds": ", ".join(bounds),
        })
    return fields


@router.get("/launch", response_class=HTMLResponse)
def launch_page(request: Request) -> HTMLResponse:
    # Pre-filling (relaunch with a remedy) happens in the browser from ?config= and ?remedy=.
    return _render(request, "launch.html", page="launch", fields=launch_fields())
