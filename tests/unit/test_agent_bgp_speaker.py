"""What the node's record says of a session the agent could not configure. The daemon is a small
in-memory stand-in: the sessions it reports come from the real parser of its replies."""

from __future__ import annotations

from leifur.agent.bgp import Speaker
from leifur.agent.frr import session_states
from leifur.announce import plan
from leifur.announce.bgp_intent import SecretRef, Session


class Daemon:
    """Applies nothing; knows no neighbour, as bgpd before a session is configured."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def apply(self, text: str) -> None:
        self.applied.append(text)

    def sessions(self, sessions: list[Session]):
        return session_states(sessions, {}, [])


class NoPasswords:
    def watch_secrets(self, namespaces: set[str], patience: float) -> bool:
        return True

    def password(self, ref: SecretRef) -> str | None:
        return None


def peer(name: str, address: str, **spec) -> dict:
    return {"metadata": {"name": name},
            "spec": {"peerAddress": address, "myASN": 64512, "peerASN": 64500, **spec}}


def test_a_session_left_unconfigured_says_why_in_the_record_and_the_others_do_not():
    cluster = plan.Cluster(nodes=[{"metadata": {"name": "n1"}}], peers=[
        peer("r1", "203.0.113.1", passwordSecret={"name": "pw", "namespace": "leifur-system"}),
        peer("r2", "203.0.113.2")])
    reported = []
    speaker = Speaker(Daemon(), "n1", report=reported.append)  # type: ignore[arg-type]
    records = {r.peer: r.as_dict() for r in speaker.sync(cluster, None, NoPasswords()) or ()}
    assert records["r1"]["state"] == "NotConfigured"
    assert "no password" in records["r1"]["message"] and "leifur-system/pw" in records["r1"]["message"]
    assert "message" not in records["r2"]
    assert [p.peer for p in reported] == ["r1"]
