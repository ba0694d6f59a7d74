"""Test files are imported by their basename (pytest's rootless mode): two with the same name in
different folders make a run of both fail to collect. The quick path runs only some folders, so
it would not see that; this does."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_name() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, count in names.items() if count > 1] == []
