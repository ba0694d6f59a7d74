"""leifur-controller's flags: their defaults are ControllerSettings', bad Lease timing is a usage error."""

from __future__ import annotations

import pytest

from leifur.controller.main import build_parser, settings_from
from leifur.model.settings import ControllerSettings, LeaderSettings


def settings(monkeypatch, *argv: str, env: dict[str, str] | None = None) -> ControllerSettings:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    parser = build_parser()
    return settings_from(parser, parser.parse_args(list(argv)))


def test_without_flags_the_settings_are_the_defaults(monkeypatch):
    assert settings(monkeypatch) == ControllerSettings()


def test_flags_and_the_pod_namespace_override_them(monkeypatch):
    got = settings(monkeypatch, "--workers", "2", "--lease-duration", "4", "--renew-deadline", "3",
                   "--retry-period", "0.5", env={"POD_NAMESPACE": "lb"})
    assert got == ControllerSettings(workers=2, lease_namespace="lb", leader=LeaderSettings(4, 3, 0.5))


def test_the_help_states_the_defaults():
    text = " ".join(build_parser().format_help().split())  # however the terminal width wrapped it
    d = ControllerSettings()
    for fragment in (f"default {d.workers})", f"default {d.leader.lease_duration:g})", f":{d.metrics_port})"):
        assert fragment in text


@pytest.mark.parametrize("argv", [
    ["--renew-deadline", "20"],  # not shorter than the Lease: two leaders could write at once
    ["--retry-period", "0"],
])
def test_impossible_lease_timing_is_a_usage_error(monkeypatch, capsys, argv):
    with pytest.raises(SystemExit) as e:
        settings(monkeypatch, *argv)
    assert e.value.code == 2 and "renew_deadline" in capsys.readouterr().err


def test_an_empty_lease_namespace_is_a_usage_error_unless_leader_election_is_off(monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        settings(monkeypatch, "--lease-namespace", "")
    assert e.value.code == 2 and "--lease-namespace" in capsys.readouterr().err
    assert settings(monkeypatch, "--lease-namespace", "", "--no-leader-elect").lease_namespace == ""
