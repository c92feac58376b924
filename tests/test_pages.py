"""HTML pages over HTTP (no browser): routes, escaping, the launch form's knobs, offline assets."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import plotly

from ganscope.trainer.config import knob_catalog

REPO = Path(__file__).resolve().parent.parent
EVIL = "<img src=x onerror=alert(1)>"


class Assets(HTMLParser):
    """Collects every URL a page would load (scripts, styles, images, icons)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in ("script", "img") and a.get("src"):
            self.urls.append(a["src"])
        if tag == "link" and a.get("href"):
            self.urls.append(a["href"])


def parse(html: str) -> Assets:
    p = Assets()
    p.feed(html)
    return p


def test_pages_render_and_load_only_local_assets(server) -> None:
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "p", "config": {}}).json()["id"]
        for path in ("/", f"/runs/{run_id}", f"/compare?ids={run_id},{run_id}", "/launch", "/workers", "/docs"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith("text/html")
            urls = parse(r.text).urls
            assert urls, path
            for u in urls:
                # Same-origin paths or inline data: nothing that leaves the machine.
                assert u.startswith("/") and not u.startswith("//") or u.startswith("data:"), (path, u)
                if u.startswith("/"):
                    assert c.get(u).status_code == 200, (path, u)


def test_plotly_is_served_from_the_installed_package(server) -> None:
    r = httpx.get(server.url + "/static/vendor/plotly.min.js", timeout=30)
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    packaged = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert r.content == packaged.read_bytes()


def test_no_external_urls_in_our_templates_and_scripts() -> None:
    # The SVG namespace is an identifier, not a request.
    allowed = {"http://www.w3.org/2000/svg"}
    found = []
    for folder in ("templates", "static"):
        for f in (REPO / folder).rglob("*"):
            if f.suffix in (".html", ".js", ".css") and "vendor" not in f.parts:
                for url in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", f.read_text()):
                    if url not in allowed:
                        found.append(f"{f.relative_to(REPO)}: {url}")
    assert not found, found


def test_run_name_is_escaped_in_html(server) -> None:
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": EVIL, "config": {}}).json()["id"]
        html = c.get(f"/runs/{run_id}").text
    assert EVIL not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert not [t for t, a in parse(html).tags if t == "img" and a.get("src") == "x"]


def test_unknown_run_page_is_a_404_page(server) -> None:
    r = httpx.get(server.url + "/runs/987654", timeout=10)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html") and "987654" in r.text


def test_launch_form_has_every_knob_with_its_default_and_help(server) -> None:
    html = httpx.get(server.url + "/launch", timeout=10).text
    tags = parse(html).tags
    fields = {a["id"][2:]: (t, a) for t, a in tags if a.get("id", "").startswith("f-")}
    catalog = knob_catalog()
    assert set(fields) == {k["name"] for k in catalog}
    for knob in catalog:
        tag, attrs = fields[knob["name"]]
        default = knob["default"]
        if isinstance(default, bool):
            assert tag == "input" and attrs["type"] == "checkbox" and ("checked" in attrs) == default
        elif "enum" in knob["schema"]:
            assert tag == "select"
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            assert float(attrs["value"]) == default, knob["name"]
        assert knob["help"].split("`")[0][:30] in html.replace("&#39;", "'").replace("&#34;", '"'), knob["name"]


def test_compare_page_embeds_the_requested_ids(server) -> None:
    html = httpx.get(server.url + "/compare?ids=3,x,5", timeout=10).text
    assert '"ids": [3, 5]' in html


def test_launch_form_groups_every_knob_once(server) -> None:
    html = httpx.get(server.url + "/launch", timeout=10).text
    tags = parse(html).tags
    groups = [a["data-group"] for t, a in tags if t == "fieldset"]
    assert groups[:3] == ["data", "networks", "optimisation"] and len(groups) == len(set(groups))
    knobs = [a["data-name"] for t, a in tags if a.get("class") == "knob"]
    assert sorted(knobs) == sorted(k["name"] for k in knob_catalog())
    applies = {a["data-name"]: a["data-applies"] for t, a in tags if a.get("class") == "knob"}
    assert applies["toy_hidden"] == "toy" and applies["ngf"] == "image" and applies["lr_d"] == "all"


def test_swagger_ui_is_served_from_the_installed_package(server) -> None:
    from swagger_ui_bundle import swagger_ui_path

    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = httpx.get(f"{server.url}/static/vendor/swagger-ui/{name}", timeout=30)
        assert r.status_code == 200 and r.content == (Path(str(swagger_ui_path)) / name).read_bytes()
    assert httpx.get(f"{server.url}/static/vendor/swagger-ui/index.html", timeout=10).status_code == 404
    assert httpx.get(f"{server.url}/redoc", timeout=10).status_code == 404  # it would load a CDN script


def test_workers_page_and_its_json_twin(server) -> None:
    r = httpx.get(server.url + "/workers", timeout=10)
    assert r.status_code == 200 and "/api/workers" in r.text
    body = httpx.get(server.url + "/api/workers", timeout=10).json()
    assert body["workers"] == [] and body["queue"] == []
