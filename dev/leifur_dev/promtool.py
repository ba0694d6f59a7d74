"""Prometheus's own tools: `promtool check metrics` lints exposition text, `promtool test rules`
runs alert rules on given series (Debian's prometheus package; hack/bootstrap.sh installs it)."""

from __future__ import annotations

import json
import os
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


def test_rules(rule_groups: dict, tests: list[dict], workdir: str) -> list[str]:
    """`promtool test rules`: `rule_groups` as a PrometheusRule's spec holds them, `tests` as
    promtool's unit-test file lists them. One line per failure, none when every test passes."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool not found: hack/bootstrap.sh installs it (Debian package prometheus)")
    rules, spec = os.path.join(workdir, "rules.json"), os.path.join(workdir, "tests.json")
    with open(rules, "w") as f:
        json.dump(rule_groups, f)
    with open(spec, "w") as f:
        json.dump({"rule_files": [rules], "evaluation_interval": "1m", "tests": tests}, f)
    res = subprocess.run([promtool, "test", "rules", spec], capture_output=True, text=True, timeout=60)
    return [] if res.returncode == 0 else [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
