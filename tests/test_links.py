"""Every link a user can follow resolves: inside the repository, to a page the server serves, or to a
public http(s) URL. Nothing the repo ships points at a file outside it.

Links in README.md and docs/*.md: a relative path must name a file in the repo (and a `#fragment` a
heading in it); a loopback URL must be a route the server answers; anything else must be http(s).
Links in templates are fetched from the real server. Sources the signature catalog cites must be
publications or URLs, not files that are not in the repo.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import httpx

from tests.harness import REPO

MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<(https?://[^>\s]+)>")
HTML_LINK = re.compile(r"""(?:href|src)=["']([^"'{}]+)["']""")
LOOPBACK = {"127.0.0.1", "localhost", "0.0.0.0", "::1"}
# Files the repo must never send a reader to (the design notes live outside it).
FOREIGN = re.compile(r"DESIGN\.md|GAN-NOTES\.md|/work/|\.\./shared/")


def _docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _anchors(md: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown file."""
    out = set()
    for line in md.read_text().splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def _check_md_target(doc: Path, target: str, routes: set[str]) -> str | None:
    """None when the link resolves; else what is wrong."""
    url = urlparse(target)
    if url.scheme in ("http", "https"):
        if url.hostname in LOOPBACK:
            path = url.path or "/"
            return None if path in routes else f"{target}: not a page the server serves"
        return None if url.hostname and "." in url.hostname else f"{target}: not a public URL"
    if url.scheme:
        return f"{target}: only http(s) links or repository paths"
    path, _, fragment = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    if not dest.is_relative_to(REPO):
        return f"{target}: points outside the repository"
    rel = dest.relative_to(REPO).as_posix()
    if not dest.exists():
        return f"{target}: {rel} is not in the repository"
    if fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
        return f"{target}: no heading #{fragment} in {rel}"
    return None


def _broken_markdown_links() -> list[str]:
    routes = {"/", "/compare", "/launch", "/workers", "/docs", "/healthz"}
    broken = []
    for doc in _docs():
        for m in MD_LINK.finditer(doc.read_text()):
            target = m.group(1) or m.group(2)
            problem = _check_md_target(doc, target, routes)
            if problem:
                broken.append(f"{doc.relative_to(REPO)}: {problem}")
    return broken


def test_links_in_readme_and_docs_resolve() -> None:
    broken = _broken_markdown_links()
    assert not broken, broken


def test_links_in_templates_are_served(server) -> None:
    found = []
    for tpl in sorted((REPO / "templates").glob("*.html")):
        for target in HTML_LINK.findall(tpl.read_text()):
            found.append((tpl.name, target))
    assert found
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "links", "config": {}}).json()["id"]
        for name, target in found:
            url = urlparse(target)
            assert not url.scheme and not url.netloc, f"{name}: {target} leaves the server"
            if not target.startswith("/"):
                continue  # "#" anchors within the page
            path = target.replace("/runs/{{ run_id }}", f"/runs/{run_id}")
            r = c.get(path.split("?")[0] + ("?" + path.split("?", 1)[1] if "?" in path else ""))
            assert r.status_code in (200, 404) if "/checkpoints/" in path or "samples.zip" in path \
                else r.status_code == 200, f"{name}: {target} answered {r.status_code}"


def test_no_file_of_the_repo_points_outside_it() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for rel in tracked:
        path = REPO / rel
        if path.suffix not in (".py", ".md", ".toml", ".html", ".js", ".css", ".yml", ".yaml", ".cfg") \
                or rel == "tests/test_links.py":
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if FOREIGN.search(line):
                hits.append(f"{rel}:{n}: {line.strip()[:120]}")
    assert not hits, hits


def test_catalog_sources_are_publications_or_public_urls() -> None:
    from ganscope.server.detectors.catalog import SOURCES

    broken = []
    for key, text in SOURCES.items():
        for url in re.findall(r"https?://\S+", text):
            host = urlparse(url).hostname or ""
            if host in LOOPBACK or "." not in host:
                broken.append(f"{key}: {url} is not public")
        # A file named outside a URL must be one of ours (a URL's own path is the publisher's business).
        for name in re.findall(r"[\w./-]+\.(?:md|txt|pdf|py)\b", re.sub(r"https?://\S+", " ", text)):
            if not (REPO / name).exists():
                broken.append(f"{key}: cites {name}, which is not in the repository")
    assert not broken, broken


def test_the_server_serves_what_the_readme_names(server) -> None:
    readme = (REPO / "README.md").read_text()
    for path in re.findall(r"`(/(?:workers|compare|launch|docs))[`?]", readme):
        assert httpx.get(server.url + path, timeout=30).status_code == 200, path
