"""The API docs page works offline: Swagger UI and the favicon come from this server, nothing else."""

from __future__ import annotations

from urllib.parse import urlparse

import httpx
import pytest

from tests.browser import watched_page

pytestmark = pytest.mark.browser


def test_docs_render_with_no_request_leaving_the_machine(server, browser) -> None:
    with watched_page(browser, server.url) as (page, log):
        leaving = []
        # Anything not for 127.0.0.1 is refused and recorded: the offline machine, made certain.
        page.context.route(lambda url: urlparse(url).hostname != "127.0.0.1",
                           lambda route: (leaving.append(route.request.url), route.abort()))
        page.goto(server.url + "/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        assert page.locator(".swagger-ui .opblock").count() > 20
        assert page.locator(".swagger-ui .opblock-summary-path", has_text="/api/workers").count() >= 1
        icon = page.eval_on_selector("link[rel*=icon]", "l => l.href")
        assert urlparse(icon).hostname == "127.0.0.1" and httpx.get(icon).status_code == 200
        # Expanding an operation renders its schema (the 3.0 copy Swagger UI 4 reads).
        page.locator(".opblock-post .opblock-summary-path", has_text="/api/jobs").first.click()
        page.wait_for_function("""[...document.querySelectorAll('.opblock.is-open .opblock-body')]
            .some(b => b.innerText.includes('image_size'))""", timeout=15_000)
        assert leaving == [] and log.foreign_requests() == [], leaving
    assert not log.problems(), log.problems()
    r = httpx.get(server.url + "/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg")
    # /openapi.json itself stays as FastAPI writes it (3.1) for clients and schema tools.
    assert httpx.get(server.url + "/openapi.json").json()["openapi"].startswith("3.1")
    assert httpx.get(server.url + "/docs/openapi-3.0.json").json()["openapi"] == "3.0.3"
