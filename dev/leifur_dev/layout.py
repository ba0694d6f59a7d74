"""The product as it installs (agent/ as leifur.agent), laid out in a directory for tools that walk files.

import-linter finds a package's modules by walking its folder, so it would miss leifur.agent,
whose sources live in agent/. `python -m leifur_dev.layout lint-imports` checks the copy instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def lay_out(src: Path, dest: Path) -> Path:
    """Copy `src`'s leifur/ with agent/ inside it as leifur/agent, and the dev tooling, into `dest`."""
    shutil.copytree(src / "leifur", dest / "leifur", ignore=_IGNORE)
    shutil.copytree(src / "agent", dest / "leifur" / "agent", ignore=_IGNORE)
    shutil.copytree(src / "dev" / "leifur_dev", dest / "leifur_dev", ignore=_IGNORE)
    return dest


def lint_imports(src: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run lint-imports with `src`'s contracts over `src` as installed."""
    with tempfile.TemporaryDirectory(prefix="leifur-layout-") as tmp:
        root = lay_out(src, Path(tmp))
        # The copy must shadow the editable install of the checkout.
        env = {**os.environ, "PYTHONPATH": str(root)}
        exe = Path(sys.executable).with_name("lint-imports")
        return subprocess.run([str(exe), "--no-cache", str(src / "pyproject.toml")], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)


def main() -> int:
    res = lint_imports()
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
