"""The docs' pictures and stylesheet: every image is valid SVG, titled, shown on a page with alt
text, and every image a page shows exists; the stylesheets mkdocs.yml names exist."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SVG = "{http://www.w3.org/2000/svg}"
# ![alt](path) in Markdown; the path relative to the page.
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)")


def shown() -> list[tuple[Path, str, Path]]:
    """(page, alt text, image) for every image a page shows."""
    return [(page, m.group(1), (page.parent / m.group(2)).resolve())
            for page in sorted(DOCS.rglob("*.md")) for m in IMAGE.finditer(page.read_text())]


@pytest.mark.parametrize("svg", sorted(DOCS.rglob("*.svg")), ids=lambda p: p.name)
def test_an_image_is_svg_with_a_title(svg: Path) -> None:
    root = ET.parse(svg).getroot()
    assert root.tag == f"{SVG}svg"
    title = root.find(f"{SVG}title")
    assert title is not None and (title.text or "").strip(), f"{svg.name}: no <title> (what a screen reader says)"


@pytest.mark.parametrize("svg", sorted(DOCS.rglob("*.svg")), ids=lambda p: p.name)
def test_every_image_is_shown_with_alt_text(svg: Path) -> None:
    alts = [alt for _page, alt, image in shown() if image == svg.resolve()]
    assert alts, f"{svg.relative_to(ROOT)} is on no page"
    assert all(alt.strip() for alt in alts), f"{svg.name} is shown without alt text"


def test_every_image_a_page_shows_exists() -> None:
    missing = [f"{page.relative_to(ROOT)}: {image}" for page, _alt, image in shown() if not image.is_file()]
    assert not missing


def test_the_stylesheets_exist() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config.get("extra_css"), "mkdocs.yml names no stylesheet: the theme squeezes wide tables"
    for css in config["extra_css"]:
        assert (DOCS / css).is_file(), f"mkdocs.yml names {css}, which is not in docs/"
