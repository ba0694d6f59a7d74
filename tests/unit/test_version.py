"""One version, stamped once: the package, --version of the three programs, leifur_build_info."""

from __future__ import annotations

import importlib.metadata
import tomllib

import pytest
from prometheus_client import REGISTRY

import leifur
from leifur.agent import main as agent_main
from leifur.cli import leifurctl
from leifur.controller import main as controller_main
from leifur_dev.cluster import REPO


@pytest.mark.parametrize("main, program", [
    (controller_main.main, "leifur-controller"), (agent_main.main, "leifur-agent"), (leifurctl.main, "leifurctl"),
], ids=["controller", "agent", "leifurctl"])
def test_every_program_says_its_version_on_one_line(main, program, capsys, monkeypatch):
    # A release's revision (40 hex digits, -dirty from a modified checkout) on a narrow terminal.
    revision = "0123456789abcdef0123456789abcdef01234567-dirty"
    monkeypatch.setenv("LEIFUR_REVISION", revision)
    monkeypatch.setenv("COLUMNS", "40")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"{program} {leifur.__version__} (revision {revision})\n"


def test_the_package_takes_its_version_from_the_one_place():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("leifur") == leifur.__version__


def test_started_logs_the_version_first_and_sets_build_info(caplog, monkeypatch):
    from leifur.kube import observability

    monkeypatch.delenv("LEIFUR_REVISION", raising=False)
    with caplog.at_level("INFO"):
        observability.started("leifur-test")
    assert caplog.records[0].getMessage() == f"leifur-test {leifur.__version__} (revision unknown) starting"
    labels = {"program": "leifur-test", "version": leifur.__version__, "revision": "unknown"}
    assert REGISTRY.get_sample_value("leifur_build_info", labels) == 1
