"""leifur-controller's flags: their defaults are ControllerSettings', bad Lease timing or names are usage errors."""

from __future__ import annotations

import pytest

from leifur.controller.main import build_parser, settings_from
from leifur.model import names
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
    for fragment in (f"default {d.workers})", f"default {d.leader.lease_duration:g})", f":{d.metrics_port})",
                     f"(default {d.health_address})"):
        assert fragment in text


@pytest.mark.parametrize("argv", [
    ["--renew-deadline", "20"],  # not shorter than the Lease: two leaders could write at once
    ["--retry-period", "0"],
])
def test_impossible_lease_timing_is_a_usage_error(monkeypatch, capsys, argv):
    with pytest.raises(SystemExit) as e:
        settings(monkeypatch, *argv)
    assert e.value.code == 2 and "renew_deadline" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["--no-leader-elect"], ["--no-create-heartbeat-secret"]])
def test_an_empty_lease_namespace_is_a_usage_error_while_something_needs_it(monkeypatch, capsys, argv):
    # Both the Lease and the heartbeat key Secret live in the controller's namespace.
    with pytest.raises(SystemExit) as e:
        settings(monkeypatch, "--lease-namespace", "", *argv)
    assert e.value.code == 2 and "--lease-namespace" in capsys.readouterr().err


def test_an_empty_lease_namespace_is_fine_when_nothing_needs_it(monkeypatch):
    got = settings(monkeypatch, "--lease-namespace", "", "--no-leader-elect", "--no-create-heartbeat-secret")
    assert got.lease_namespace == ""


def test_the_heartbeat_secret_flags(monkeypatch):
    d = ControllerSettings()
    assert (d.heartbeat_secret, d.create_heartbeat_secret) == (names.HEARTBEAT_SECRET, True)
    got = settings(monkeypatch, "--heartbeat-secret", "my-key", "--no-create-heartbeat-secret")
    assert (got.heartbeat_secret, got.create_heartbeat_secret) == ("my-key", False)


@pytest.mark.parametrize("name", ["", "My_Key", "a/b"])
def test_an_invalid_heartbeat_secret_name_is_a_usage_error(monkeypatch, capsys, name):
    with pytest.raises(SystemExit) as e:
        settings(monkeypatch, "--heartbeat-secret", name)
    assert e.value.code == 2 and "--heartbeat-secret" in capsys.readouterr().err


def test_a_missing_certificate_directory_stops_it_before_anything_starts(monkeypatch, capsys, tmp_path):
    from leifur.controller.main import main

    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert main(["--metrics-cert-dir", str(tmp_path / "absent")]) == 2
    # After the log line that says which build starts.
    assert f"\nleifur-controller: --metrics-cert-dir {tmp_path}/absent: cannot load" in capsys.readouterr().err
