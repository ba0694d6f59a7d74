"""leifur-agent's flags: their defaults are the settings' and a bad combination exits 2 before anything starts."""

from __future__ import annotations

import pytest

from leifur.agent import main
from leifur.model.settings import AgentSettings, ConflictSettings, HeartbeatSettings


def test_the_flags_default_to_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("NODE_NAME", "LEIFUR_METRICS_ADDRESS", "LEIFUR_HEALTH_ADDRESS", "LEIFUR_METRICS_CERT_DIR"):
        monkeypatch.delenv(env, raising=False)
    args = main.build_parser().parse_args(["--node-name", "n1"])
    defaults = AgentSettings()
    assert main.settings_from(args) == defaults
    assert args.metrics_address == f":{defaults.metrics_port}"
    # The probes' port stays on the node's loopback: the agent shares the node's network.
    assert args.health_address == defaults.health_address == "127.0.0.1:7475"
    assert args.metrics_cert_dir is None
    assert f"(default {defaults.heartbeat.dead_after})" in main.build_parser().format_help()


def test_the_flags_make_the_settings() -> None:
    args = main.build_parser().parse_args(["--heartbeat-port", "7500", "--heartbeat-interval", "0.2",
                                           "--dead-after", "1", "--handover-grace", "0.1"])
    assert main.settings_from(args) == AgentSettings(heartbeat=HeartbeatSettings(7500, 0.2, 1.0), handover_grace=0.1)


@pytest.mark.parametrize("argv", [["--dead-after", "0.2"], ["--heartbeat-interval", "0.3"]],
                         ids=["dead-after-too-short", "interval-too-long"])
def test_dead_after_must_exceed_two_intervals(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["--node-name", "n1", *argv]) == 2
    assert capsys.readouterr().err == "leifur-agent: --dead-after must exceed two heartbeat intervals\n"


def test_a_node_name_is_required(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main.main([]) == 2
    assert "--node-name (or env NODE_NAME) is required" in capsys.readouterr().err


def test_a_large_dead_after_is_accepted_and_widens_the_start_reserve():
    # Large clusters are told to raise --dead-after; the reserve for starting peers grows with it.
    got = main.settings_from(main.build_parser().parse_args(["--node-name", "n", "--dead-after", "8"]))
    assert got.heartbeat.dead_after == 8
    assert got.start_reserve_for_peers >= 2 * got.heartbeat.start_hold


def test_without_a_key_the_agent_refuses_to_start(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["--node-name", "n1", "--heartbeat-key-dir", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    # After the log line that says which build starts.
    assert f"\nleifur-agent: no heartbeat key: {tmp_path}/absent/current does not exist." in err
    assert "--insecure-heartbeats" in err


@pytest.mark.parametrize("argv, settings", [
    (["--insecure-heartbeats"], HeartbeatSettings(key_dir=None)),
    (["--heartbeat-key-dir", "/k", "--heartbeat-accept-unauthenticated"],
     HeartbeatSettings(key_dir="/k", accept_unsigned=True)),
    (["--heartbeat-max-age", "30"], HeartbeatSettings(max_age=30)),
], ids=["insecure", "rollout", "max-age"])
def test_the_heartbeat_authentication_flags(argv: list[str], settings: HeartbeatSettings) -> None:
    assert main.settings_from(main.build_parser().parse_args(argv)) == AgentSettings(heartbeat=settings)


@pytest.mark.parametrize("argv, message", [
    (["--insecure-heartbeats", "--heartbeat-accept-unauthenticated"], "exclude each other"),
    (["--heartbeat-max-age", "0.4"], "--heartbeat-max-age must exceed --dead-after"),
], ids=["insecure-and-rollout", "max-age-below-dead-after"])
def test_bad_heartbeat_flags_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["--node-name", "n1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_certificate_directory_it_cannot_load_stops_it_before_anything_starts(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tls.crt").write_text("not a certificate")
    (tmp_path / "tls.key").write_text("not a key")
    assert main.main(["--node-name", "n1", "--insecure-heartbeats", "--metrics-cert-dir", str(tmp_path)]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the log line that heartbeats are unsigned
    assert last.startswith(f"leifur-agent: --metrics-cert-dir {tmp_path}: cannot load tls.crt")


def test_the_address_conflict_flags_make_the_settings() -> None:
    args = main.build_parser().parse_args(["--address-probe-count", "2", "--address-probe-interval", "0.05",
                                           "--address-probe-wait", "0.2", "--address-defend-interval", "5",
                                           "--address-conflict-clear-after", "20",
                                           "--address-conflict-policy", "yield"])
    assert main.settings_from(args) == AgentSettings(conflicts=ConflictSettings(2, 0.05, 0.2, 5.0, 20.0, "yield"))


@pytest.mark.parametrize("argv, message", [
    (["--address-probe-count", "11"], "--address-probe-count must be 0..10"),
    (["--address-probe-wait", "-1"], "must not be negative"),
    (["--address-defend-interval", "40"], "at most --address-conflict-clear-after"),
], ids=["too-many-probes", "negative-wait", "defend-interval-past-clear-after"])
def test_bad_address_conflict_flags_exit_2(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["--node-name", "n1", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--bgp-frr-config", "/etc/frr/frr.conf"], ["--bgp-vty-dir", "/var/run/frr"]],
                         ids=["config-without-vty-dir", "vty-dir-without-config"])
def test_bgp_mode_needs_both_of_its_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["--node-name", "n1", "--insecure-heartbeats", *argv]) == 2
    assert capsys.readouterr().err == "leifur-agent: BGP mode needs both --bgp-frr-config and --bgp-vty-dir\n"


def test_bgp_mode_is_off_by_default() -> None:
    args = main.build_parser().parse_args(["--node-name", "n1"])
    assert args.bgp_frr_config is None and args.bgp_vty_dir is None
