"""HTML pages: runs list, one run, compare, launch, workers; the offline API docs. Thin shells: their
data comes from the JSON API.

Every page fetches the same JSON a script would (`/api/runs`, `/api/runs/{id}`, `/api/workers`,
...), so nothing shown here is out of reach of the REST API. The launch form is rendered from
`trainer.config.knob_catalog()`, the schema the server validates jobs with (server/launch_form.py
groups it). plotly.js and Swagger UI are served from their installed Python packages: no page makes
a request off this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from swagger_ui_bundle import swagger_ui_path

from ganscope.server.deps import DB
from ganscope.server.launch_form import DATASET_KINDS, grouped_fields
from ganscope.server.schema import Run
from ganscope.trainer.config import JobConfig

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=str(ROOT / "templates"))  # autoescape on for .html
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
SWAGGER_DIR = Path(str(swagger_ui_path))
SWAGGER_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
FAVICON = ROOT / "static" / "favicon.svg"
# Bumped with the JS/CSS so browsers do not keep a stale script after an upgrade.
ASSET_VERSION = "2"

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


@router.get("/static/vendor/swagger-ui/{name}")
def swagger_asset(name: str) -> FileResponse:
    """Swagger UI's script and style from the installed swagger-ui-bundle package."""
    if name not in SWAGGER_FILES:
        raise HTTPException(404, f"no such Swagger UI file: {name}")
    return FileResponse(SWAGGER_DIR / name, media_type=SWAGGER_FILES[name],
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    # Browsers ask for /favicon.ico on pages that name no icon (the JSON views, for one).
    return FileResponse(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


def _as_openapi_30(node: Any) -> Any:
    """OpenAPI 3.1 schema constructs FastAPI emits, in their 3.0 spelling: `anyOf [X, null]` becomes X with
    `nullable`, `const` an one-value enum. Swagger UI 4 (what swagger-ui-bundle ships) reads 3.0 only."""
    if isinstance(node, list):
        return [_as_openapi_30(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _as_openapi_30(v) for k, v in node.items()}
    options = out.get("anyOf")
    if isinstance(options, list) and any(o == {"type": "null"} for o in options):
        rest = [o for o in options if o != {"type": "null"}]
        out.pop("anyOf")
        if len(rest) == 1:
            out = {**rest[0], **out}
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    return out


@router.get("/docs/openapi-3.0.json")
def openapi_30(request: Request) -> dict[str, Any]:
    """The API description for the docs page: /openapi.json in OpenAPI 3.0 form."""
    spec = _as_openapi_30(request.app.openapi())
    spec["openapi"] = "3.0.3"
    return spec


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/docs/openapi-3.0.json", title="ganscope API",
                               swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
                               swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
                               swagger_favicon_url="/static/favicon.svg",
                               oauth2_redirect_url="/docs/oauth2-redirect")


@router.get("/docs/oauth2-redirect", response_class=HTMLResponse)
def api_docs_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


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


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request) -> HTMLResponse:
    # JSON twin: GET /api/workers (the page renders exactly that).
    return _render(request, "workers.html", page="workers")


@router.get("/launch", response_class=HTMLResponse)
def launch_page(request: Request) -> HTMLResponse:
    # Pre-filling (relaunch with a remedy) happens in the browser from ?config= and ?remedy=.
    return _render(request, "launch.html", page="launch", groups=grouped_fields(), dataset_kinds=DATASET_KINDS)
