"""The runtime dependencies in pyproject.toml are exactly the third-party packages the product imports."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def imported_top_level(folder: Path) -> set[str]:
    """Top-level modules named by absolute imports in every .py file under `folder`."""
    out = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {a.name.partition(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                out.add(node.module.partition(".")[0])
    return out


def test_runtime_dependencies_are_exactly_what_the_runtime_imports() -> None:
    modules = imported_top_level(REPO / "leifur") | imported_top_level(REPO / "agent")
    third_party = modules - set(sys.stdlib_module_names) - {"leifur"}
    dists = packages_distributions()
    missing = sorted(m for m in third_party if m not in dists)
    assert not missing, f"imported but installed by nothing: {missing}"
    imported = {canonicalize_name(dists[m][0]) for m in third_party}
    declared = {canonicalize_name(Requirement(d).name) for d in PYPROJECT["project"]["dependencies"]}
    assert imported == declared, (f"imported, not declared: {imported - declared}; "
                                  f"declared, not imported: {declared - imported}")
