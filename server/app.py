"""The FastAPI application: wiring only. Routers live in server/api/, pages in server/pages.py."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from fastapi.staticfiles import StaticFiles

from ganscope.server.db import Database
from ganscope.server.live import Broker
from ganscope.server.memory import limit_malloc_arenas
from ganscope.server.settings import Settings, get_settings

log = logging.getLogger("ganscope.server")
ROOT = Path(__file__).resolve().parent.parent
STATIC_DIR = ROOT / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    limit_malloc_arenas()  # before any request thread: see server/memory.py

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ganscope.server.store.migrate import migrate

        settings.home.mkdir(parents=True, exist_ok=True)
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
        migrate(app.state.db)
        app.state.broker.bind(asyncio.get_running_loop())
        background = [asyncio.create_task(t(app)) for t in app.state.background_tasks]
        try:
            yield
        finally:
            for t in background:
                t.cancel()
            app.state.db.dispose()

    app = FastAPI(
        title="ganscope",
        version="1",
        description="GAN training diagnostics: launch jobs, stream signals, detect failure signatures.",
        default_response_class=ORJSONResponse,  # orjson writes NaN/Inf as null: the JSON stays valid
        lifespan=lifespan,
        # FastAPI's own /docs and /redoc load their scripts from a CDN: server/pages.py serves /docs from
        # the installed swagger-ui-bundle package instead, so the API docs work offline.
        docs_url=None, redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = Database(settings.sqlalchemy_url)
    app.state.broker = Broker()
    app.state.background_tasks = []  # async callables(app) started with the server
    from ganscope.server.inputs import InputGuard
    app.add_middleware(InputGuard)  # ids, NUL, JSON depth and strings: 404/422 before any route (server/inputs.py)
    from ganscope.server.limits import RequestSizeLimit
    app.add_middleware(RequestSizeLimit, settings=settings)  # 413 for bodies over max_request_mb/max_upload_mb
    from ganscope.server.security import CrossSiteGuard
    app.add_middleware(CrossSiteGuard, settings=settings)  # outermost: Host allow-list, cross-site refusals

    from ganscope.server.api import alerts, downloads, events, ingest, jobs, manage, notifications, runs, stream, workers
    from ganscope.server import pages

    for module in (jobs, runs, manage, downloads, workers, ingest, alerts, notifications, events, stream, pages):
        app.include_router(module.router)
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app)  # e.g. register a background task
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    from ganscope.server.api.wire import declare_errors
    declare_errors(app)  # every status a route can answer is in /openapi.json

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return ORJSONResponse(status_code=422, content={"detail": detail})

    from starlette.requests import ClientDisconnect
    from ganscope.server.inputs import log_disconnect

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> Response:
        log_disconnect(request.scope)  # one line instead of "unhandled error" and two tracebacks
        return Response(status_code=400)  # never delivered: the client is gone

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> ORJSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ORJSONResponse(status_code=500, content={"detail": f"internal error ({type(exc).__name__}); see server log"})

    return app
