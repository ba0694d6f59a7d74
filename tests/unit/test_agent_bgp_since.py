"""When a session entered its state, as the node's record shows it (leifur.agent.bgp.Since): fixed
when the state is first seen, so that the daemon's counter moving does not rewrite the record."""

from __future__ import annotations

import pytest

from leifur.agent.bgp import Since
from leifur.announce.bgp_intent import SessionState


def ago(seconds: float) -> str:
    return f"{seconds:g}s ago"


def state(state: str, since_s: float | None, peer: str = "r1") -> SessionState:
    return SessionState(peer, "192.0.2.254", state, since_s)


CASES = [
    ("first seen: from the daemon's time in the state",
     [state("Established", 30)], [("30s ago", True)]),
    ("the daemon's counter moves, the state does not: unchanged",
     [state("Established", 30), state("Established", 32)], [("30s ago", True), ("30s ago", False)]),
    ("a new state: from the daemon's time again",
     [state("Established", 30), state("Active", 2)], [("30s ago", True), ("2s ago", True)]),
    ("a new state the daemon gives no time for: now",
     [state("Established", 30), state("Connect", None)], [("30s ago", True), ("0s ago", True)]),
    ("first seen with no time at all (never up): none",
     [state("Connect", None)], [(None, True)]),
    ("peers apart",
     [state("Established", 30), state("Active", 5, peer="r2"), state("Established", 40)],
     [("30s ago", True), ("5s ago", True), ("30s ago", False)]),
]


@pytest.mark.parametrize(("reads", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_since(reads: list[SessionState], want: list[tuple[str | None, bool]]) -> None:
    since = Since(ago)
    assert [since.since(s) for s in reads] == want


def test_a_peer_forgotten_is_first_seen_again() -> None:
    since = Since(ago)
    since.since(state("Established", 30))
    since.keep({"r2"})
    assert since.since(state("Established", 31)) == ("31s ago", True)
