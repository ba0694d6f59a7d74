"""The tests the docs cite as evidence exist: a renamed or deleted test must not leave a claim unbacked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# `netns/test_x.py::test_y`, `tests/netns/test_x.py`, `unit/test_x.py` (relative to tests/ or the repo).
CITATION = re.compile(r"\b((?:tests/)?(?:unit|integration|netns|chaos|docs|packaging|benchmarks)/test_\w+\.py)"
                      r"(?:::(test_\w+))?")
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def citations() -> list[tuple[str, str, str | None]]:
    return [(page.name, m.group(1), m.group(2)) for page in PAGES for m in CITATION.finditer(page.read_text())]


@pytest.mark.parametrize("page, path, test", citations(), ids=lambda v: str(v))
def test_a_cited_test_exists(page: str, path: str, test: str | None) -> None:
    file = ROOT / (path if path.startswith("tests/") else f"tests/{path}")
    assert file.is_file(), f"{page} cites {path}, which does not exist"
    if test:
        assert re.search(rf"^def {test}\(", file.read_text(), re.M), f"{page} cites {path}::{test}, not defined there"
