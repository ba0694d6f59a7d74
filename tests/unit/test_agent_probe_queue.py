"""A probe of a new IP waits in a queue (two run at once); by its turn the IP may no longer be this
node's to announce: an agent ready before its peers owns every new IP until they are ready, and
with thousands of new IPs its own would wait minutes behind the others' probes."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from leifur.agent import app, prober, step
from leifur.agent.app import Agent, Probe
from leifur.model.settings import AgentSettings

KEY = ("192.0.2.40", ("uid-web",))


def agent(wanted: frozenset) -> SimpleNamespace:
    return SimpleNamespace(_probes={KEY: Probe(None)}, _probes_wanted=wanted, settings=AgentSettings(),
                           stop_event=threading.Event(), _dirty=threading.Event())


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The probes sent, each answered by nobody."""
    out: list[str] = []

    def probe(ifname: str, ip: str, ours: object, **_: object) -> prober.ProbeResult:
        out.append(ip)
        return prober.ProbeResult(ip, ifname, None)

    monkeypatch.setattr(app.prober, "probe", probe)
    return out


def test_a_probe_still_awaited_is_sent_and_its_result_kept(sent: list[str]) -> None:
    a = agent(frozenset({KEY}))
    Agent._run_probe(a, KEY, "192.0.2.40", ("eth0",), frozenset())  # type: ignore[arg-type]
    assert sent == ["192.0.2.40"]
    assert a._probes[KEY].result == step.PROBE_CLEAR and a._dirty.is_set()


def test_a_probe_no_longer_awaited_is_not_sent_and_forgotten(sent: list[str]) -> None:
    a = agent(frozenset({("192.0.2.41", ("uid-other",))}))
    Agent._run_probe(a, KEY, "192.0.2.40", ("eth0",), frozenset())  # type: ignore[arg-type]
    assert sent == []
    # Forgotten, not marked done: should the IP be this node's again, the next sync probes it.
    assert KEY not in a._probes
