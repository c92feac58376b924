"""docs/signatures.md is the catalog, generated: it fails here when it is stale, and cites only original works."""

from __future__ import annotations

import re

from ganscope.server.detectors import catalog, docs, quality
from ganscope.server.detectors.sources import SOURCES


def test_signatures_doc_is_generated_from_the_catalog_and_current():
    text = docs.PATH.read_text(encoding="utf-8")
    assert text == docs.render(), "docs/signatures.md is stale: run `python -m ganscope.server.detectors.docs`"


def test_doc_covers_every_signature_threshold_measure_and_source():
    text = docs.render()
    for s in catalog.SIGNATURES:
        assert f"### {s.id}" in text and s.remedy_text in text
        for t in s.thresholds:
            assert f"| `{t.name}` |" in text
    for m in quality.MEASURES:
        assert f"| `{m.name}` |" in text
    for ref in SOURCES.values():
        assert ref in text
    # nothing in the repo points outside it
    assert not re.search(r"GAN-NOTES|DESIGN\.md|\.\./shared|seed write-up", text)
