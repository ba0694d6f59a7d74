"""The release notes: CHANGELOG.md has an entry for the version the package carries, and the
documentation site's copy (mkdocs cannot include a file outside docs/) is the same text."""

from __future__ import annotations

import re
from pathlib import Path

import leifur

ROOT = Path(__file__).resolve().parents[2]
CHANGELOG = ROOT / "CHANGELOG.md"
COPY = ROOT / "docs" / "release-notes.md"


def test_the_current_version_has_an_entry() -> None:
    # `## VERSION` opens an entry (hack/release.sh takes the release's notes from it).
    headings = re.findall(r"^## (\S+)", CHANGELOG.read_text(), re.M)
    assert headings, "CHANGELOG.md has no entry"
    assert headings[0] == leifur.__version__, (
        f"the newest entry of CHANGELOG.md is {headings[0]}, the package is {leifur.__version__}")


def test_the_sites_copy_is_the_changelog() -> None:
    assert COPY.read_text() == CHANGELOG.read_text(), "cp CHANGELOG.md docs/release-notes.md"
