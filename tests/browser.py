"""Headless Chromium for dashboard tests and bench/live.py: the Debian chromium, watched for trouble.

`playwright install` cannot download browsers here, so the system chromium is launched
with flags that keep it from calling home. Every page opened through `watched_page`
records console errors, uncaught exceptions, dialogs and every request it makes, so a
test can assert there were none and that nothing left the server's host.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlparse

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def launch_browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    base_url: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # responses with status >= 400

    def foreign_requests(self) -> list[str]:
        """Requests to any host other than the server's (data: and blob: URLs stay on the page)."""
        host = urlparse(self.base_url).netloc
        return [u for u in self.requests
                if urlparse(u).scheme in ("http", "https", "ws", "wss") and urlparse(u).netloc != host]

    def problems(self) -> list[str]:
        return ([f"console: {m}" for m in self.console_errors] + [f"pageerror: {m}" for m in self.page_errors]
                + [f"dialog: {m}" for m in self.dialogs] + [f"foreign request: {u}" for u in self.foreign_requests()]
                + [f"failed: {u}" for u in self.failed])


@contextmanager
def watched_page(browser, base_url: str, viewport: tuple[int, int] = (1500, 1100)) -> Iterator[tuple[object, PageLog]]:
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    log = PageLog(base_url=base_url)
    page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log.page_errors.append(str(e)))

    def on_dialog(d) -> None:  # noqa: ANN001 - an XSS payload would open one: record it and close it
        log.dialogs.append(f"{d.type}: {d.message}")
        d.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda r: log.requests.append(r.url))
    page.on("response", lambda r: log.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        yield page, log
    finally:
        context.close()
