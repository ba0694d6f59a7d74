"""Prometheus's own linter for exposition text: `promtool check metrics` (Debian's prometheus
package; hack/bootstrap.sh installs it)."""

from __future__ import annotations

import shutil
import subprocess


def check_metrics(text: str) -> list[str]:
    """What promtool finds wrong with `text` (the body of a /metrics answer): one line per problem,
    none when it passes."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool not found: hack/bootstrap.sh installs it (Debian package prometheus)")
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    problems = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    if res.returncode != 0 and not problems:
        problems = [f"promtool exited {res.returncode} without a word"]
    return problems
