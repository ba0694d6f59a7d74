"""The layers of DESIGN.md hold (lint-imports), and a contract broken on purpose is caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from leifur_dev.layout import REPO, lint_imports


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for part in ("leifur", "agent", "dev/leifur_dev"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_checkout_keeps_every_contract() -> None:
    res = lint_imports()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize(("where", "line", "contract"), [
    ("leifur/model/broken.py", "import leifur.controller.reconcile", "Layers"),
    ("leifur/ipam/broken.py", "from leifur.kube import client", "Layers"),
    ("agent/broken.py", "from leifur.controller import allocation", "never import each other"),
    ("leifur/controller/broken.py", "from leifur.agent import heartbeat", "never import each other"),
    ("leifur/cli/broken.py", "import leifur_dev.stack", "never imports the dev tooling"),
    ("agent/broken2.py", "import scapy.all", "never imports the dev tooling"),
    ("leifur/announce/broken.py", "import kubernetes", "pure layers do no I/O"),
    ("leifur/kube/broken.py", "from cryptography import x509", "Only leifur.kube.selfsigned imports cryptography"),
    ("agent/broken3.py", "import cryptography", "Only leifur.kube.selfsigned imports cryptography"),
], ids=["model-imports-controller", "ipam-imports-kube", "agent-imports-controller",
        "controller-imports-agent", "cli-imports-dev-tooling", "agent-imports-scapy", "announce-imports-kubernetes",
        "kube-imports-cryptography-outside-selfsigned", "agent-imports-cryptography"])
def test_a_contract_broken_on_purpose_fails(checkout: Path, where: str, line: str, contract: str) -> None:
    (checkout / where).write_text(f'"""Broken on purpose."""\n\n{line}\n')
    res = lint_imports(checkout)
    assert res.returncode != 0, res.stdout
    # "NAME BROKEN", or "NAME BROKEN (1 ignored import)" for a contract with exceptions.
    broken = [ln for ln in res.stdout.splitlines() if " BROKEN" in ln]
    assert any(contract in ln for ln in broken), res.stdout
