"""Liveness bookkeeping among agents: who is alive and ready, from heartbeats. No sockets."""

from __future__ import annotations

import ipaddress
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from leifur.agent.heartbeat import HeartbeatService, Membership
from leifur.agent.heartbeat_keys import KeyDirectory
from leifur.agent.heartbeat_wire import Heartbeat, open_datagram
from leifur.announce.interfaces import Lost
from leifur.model.settings import HeartbeatSettings


def decode(data: bytes) -> Heartbeat | None:
    """An unsigned datagram as an agent with authentication off reads it."""
    got = open_datagram(data, None, accept_unsigned=True, now_ms=0, max_age_ms=0)
    return None if isinstance(got, str) else got


def hb(node: str, seq: int, inc: int = 1, ready: bool = True, leaving: bool = False, view: str = "") -> Heartbeat:
    return Heartbeat(node, inc, seq, ready, leaving, view)


def test_a_peer_is_eligible_while_heard_and_dead_after_silence():
    m = Membership("me", dead_after=0.5)
    assert m.heard(hb("a", 1), now=0.0).eligible
    assert m.eligible(0.4) == {"a"}
    assert not m.sweep(0.45)
    change = m.sweep(0.51)
    assert change.eligible and m.eligible(0.51) == frozenset()


def test_a_peer_that_is_not_ready_is_alive_but_not_eligible():
    m = Membership("me", dead_after=0.5)
    assert not m.heard(hb("a", 1, ready=False), 0.0)
    assert m.alive(0.1) == {"a"} and m.eligible(0.1) == frozenset()
    assert m.heard(hb("a", 2, ready=True), 0.1).eligible
    assert m.eligible(0.1) == {"a"}


def test_leaving_drops_a_peer_at_once_and_its_incarnation_never_returns():
    m = Membership("me", dead_after=0.5)
    m.heard(hb("a", 1), 0.0)
    assert m.heard(hb("a", 2, leaving=True), 0.1).eligible
    assert m.eligible(0.1) == frozenset()
    # A datagram of the same incarnation that was in flight does not bring it back.
    assert not m.heard(hb("a", 3), 0.11)
    assert m.eligible(0.11) == frozenset()
    # A restarted agent (new incarnation) is a new member.
    assert m.heard(hb("a", 1, inc=2), 0.2).eligible
    assert m.eligible(0.2) == {"a"}


def test_stale_and_duplicate_datagrams_change_nothing():
    m = Membership("me", dead_after=0.5)
    m.heard(hb("a", 5, inc=2), 0.0)
    assert m.heard(hb("a", 5, inc=2, ready=False), 0.1).replayed  # duplicate
    assert m.heard(hb("a", 9, inc=1, ready=False), 0.1).replayed  # older incarnation
    assert m.eligible(0.1) == {"a"}


def test_own_heartbeats_are_ignored():
    m = Membership("me", dead_after=0.5)
    assert not m.heard(hb("me", 1), 0.0)
    assert m.alive(0.0) == frozenset()


def test_a_peer_returning_from_the_dead_is_reported_as_revived():
    m = Membership("me", dead_after=0.5)
    m.heard(hb("a", 1), 0.0)
    m.sweep(1.0)  # partition: a is dead
    change = m.heard(hb("a", 2), 2.0)  # healed
    assert change.revived == {"a"} and change.eligible
    # A first sighting is not a revival (nobody could have been answering for us).
    assert m.heard(hb("b", 1), 2.0).revived == frozenset()


def test_decode_accepts_only_well_formed_heartbeats():
    good = hb("node-1", 7, inc=123, ready=False).encode()
    assert decode(good) == hb("node-1", 7, inc=123, ready=False)
    for bad in [b"", b"LFHB1", b"LFHB1{", b"LFHB1[]", b"XXXXX{}", good[:-1], good + b" " * 600,
                b'LFHB1{"node":"a","inc":"1","seq":1,"ready":true,"leaving":false}',
                b'LFHB1{"node":"","inc":1,"seq":1,"ready":true,"leaving":false}',
                b'LFHB1{"node":"a","inc":1,"seq":1,"ready":1,"leaving":false}',
                b'LFHB1{"node":"a","inc":1,"seq":1,"ready":true,"leaving":false,"view":7}',
                b'LFHB1{"node":"a","inc":1,"seq":1,"ready":true,"leaving":false,"view":"' + b"f" * 65 + b'"}',
                b"LFHB1\xff\xfe"]:
        assert decode(bad) is None, bad


def test_starting_peers_are_alive_unready_and_recent():
    m = Membership("me", dead_after=0.5)
    m.heard(hb("a", 1, ready=False), 0.0)
    m.heard(hb("b", 1, ready=True), 0.0)
    assert m.starting(0.1, within=5) == {"a"}
    # Still starting while it keeps sending not-ready heartbeats, until the reserve runs out.
    for i in range(2, 60):
        m.heard(hb("a", i, ready=False), i * 0.1)
    assert m.starting(4.9, within=5) == {"a"}
    assert m.starting(5.9, within=5) == frozenset()
    # Ready, it is no longer starting; dead, neither.
    m.heard(hb("a", 100, ready=True), 6.0)
    assert m.starting(6.0, within=5) == frozenset()
    m.heard(hb("c", 1, ready=False), 6.0)
    assert m.starting(7.0, within=5) == frozenset()


def test_a_restarted_agent_whose_clock_went_back_is_accepted_after_the_replay_window():
    m = Membership("me", dead_after=0.5, replay_window=10)
    m.heard(hb("a", 50, inc=1000), 0.0)
    # An older incarnation is a replay of what was recorded before a restart...
    assert m.heard(hb("a", 1, inc=900), 0.1).replayed
    m.sweep(1.0)
    assert m.heard(hb("a", 1, inc=900), 1.0).replayed
    assert m.eligible(1.0) == frozenset()
    # ...or a restart whose clock went back: after a silence longer than any replay could be
    # (older datagrams are stale), it is accepted.
    assert m.heard(hb("a", 1, inc=900), 10.1).eligible
    assert m.eligible(10.1) == {"a"}
    m.heard(hb("a", 2, inc=900, leaving=True), 10.2)
    assert m.heard(hb("a", 1, inc=800), 10.3).replayed
    assert m.heard(hb("a", 1, inc=800), 20.3).eligible


def test_replayed_datagrams_never_bring_a_dead_peer_back():
    m = Membership("me", dead_after=0.5, replay_window=10)
    recorded = [hb("a", seq, inc=1000) for seq in range(1, 6)]
    for i, h in enumerate(recorded):
        m.heard(h, i * 0.1)
    m.sweep(2.0)  # SIGKILL: a is dead
    for h in recorded:
        assert m.heard(h, 2.1).replayed
    # Not even once its peer entry is long gone.
    m.sweep(1000.0)
    assert all(m.heard(h, 1000.0).replayed for h in recorded)
    assert m.alive(1000.0) == frozenset()
    # Its next incarnation is welcome at once.
    assert m.heard(hb("a", 1, inc=2000), 1000.1).eligible


def test_forgetting_deleted_nodes():
    m = Membership("me", dead_after=0.5)
    m.heard(hb("a", 1), 0.0)
    m.heard(hb("b", 1), 0.0)
    m.sweep(1.0)
    m.forget({"b"})
    assert m.heard(hb("a", 1, inc=2), 1.0).revived == frozenset()  # a new member, not a revival
    assert m.heard(hb("b", 2), 1.0).revived == {"b"}


def test_sender_addresses_compare_in_one_form():
    from leifur.agent.heartbeat import _v6_mapped

    assert _v6_mapped("192.0.2.13") == _v6_mapped("::ffff:192.0.2.13") == _v6_mapped("::FFFF:c000:020d")
    assert _v6_mapped("2001:DB8::0001") == _v6_mapped("2001:db8::1") != _v6_mapped("192.0.2.1")


def test_views_travel_and_a_changed_view_is_a_change():
    good = hb("node-1", 7, view="0123456789abcdef").encode()
    assert decode(good).view == "0123456789abcdef"
    # Agents from before the field send none: read as unknown.
    assert decode(b'LFHB1{"node":"a","inc":1,"seq":1,"ready":true,"leaving":false}').view == ""
    m = Membership("me", dead_after=0.5)
    assert m.heard(hb("a", 1, view="v1"), 0.0).views
    assert not m.heard(hb("a", 2, view="v1"), 0.1).views
    assert m.heard(hb("a", 3, view="v2"), 0.2).views
    assert m.views(0.2) == {"a": "v2"}
    # Only eligible peers' views count: a starting one and a dead one are left out.
    assert not m.heard(hb("b", 1, ready=False, view="v9"), 0.2).views
    assert m.views(0.2) == {"a": "v2"}
    assert m.views(0.8) == {}


def test_what_a_peer_lost_travels_and_a_change_of_it_is_a_change():
    lost = Lost((ipaddress.ip_network("192.0.2.0/26"),))
    m = Membership("me", dead_after=0.5)
    assert m.heard(hb("a", 1, view="v1"), 0.0).views
    assert m.heard(Heartbeat("a", 1, 2, view="v1", lost=lost), 0.1).views
    assert not m.heard(Heartbeat("a", 1, 3, view="v1", lost=lost), 0.2)
    assert m.lost(0.2) == {"a": lost}
    assert m.heard(hb("a", 4, view="v1"), 0.3).views  # its link back up
    assert m.lost(0.3) == {}
    # Only eligible peers' losses count: a dead one is not elected anyway.
    m.heard(Heartbeat("a", 1, 5, view="v1", lost=lost), 0.4)
    assert m.lost(1.0) == {}


KEY = b"k" * 32


@pytest.fixture()
def key_dir(tmp_path: Path) -> Path:
    (tmp_path / "current").write_bytes(KEY)
    return tmp_path


@pytest.fixture()
def service(key_dir: Path) -> Iterator[HeartbeatService]:
    """A HeartbeatService on loopback that knows one peer, "a", at ::1; its threads are not started."""
    service = HeartbeatService("me", HeartbeatSettings(port=0), keys=KeyDirectory(str(key_dir)), bind="::1")
    service.set_peers({"a": "::1"})
    try:
        yield service
    finally:
        service.stop()


def send(service: HeartbeatService, *datagrams: bytes) -> None:
    """Send from ::1 and wait until the datagrams are queued on the service's socket."""
    port = service._sock.getsockname()[1]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer:
        peer.bind(("::1", 0))
        for data in datagrams:
            peer.sendto(data, ("::1", port))
    assert select.select([service._queued], [], [], 5)[0]


def signed(seq: int, inc: int = 1, **kw: object) -> bytes:
    return Heartbeat("a", inc, seq, ts=time.time_ns() // 1_000_000, **kw).seal(KEY)  # type: ignore[arg-type]


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("leifur_agent_heartbeats_rejected_total", {"reason": reason}) or 0.0


def test_a_starved_receive_thread_does_not_make_live_peers_look_dead(service: HeartbeatService) -> None:
    """Heartbeats queued on the socket count before a decision (catch_up), even if the receive
    thread has not run: here it never started, as if the CPU had been busy elsewhere. Loopback only."""
    send(service, signed(1), signed(2))
    assert service.eligible() == frozenset()  # nothing read yet: "a" looks absent
    service.catch_up()
    assert service.eligible() == {"a"}
    service.catch_up()  # an empty queue returns at once


def test_unsigned_forged_and_replayed_datagrams_are_refused_and_counted(service: HeartbeatService) -> None:
    before = {r: rejected(r) for r in ("unauthenticated", "bad-signature", "replayed")}
    send(service, signed(1), signed(2))
    service.catch_up()
    assert service.eligible() == {"a"}
    leaving = Heartbeat("a", 1, 3, leaving=True, ts=time.time_ns() // 1_000_000)
    send(service, leaving.encode(), leaving.seal(KEY)[:-32] + signed(3)[-32:], signed(1), signed(2))
    service.catch_up()
    assert service.eligible() == {"a"}  # no forged "leaving" took it out
    assert {r: rejected(r) - before[r] for r in before} == {"unauthenticated": 1, "bad-signature": 1, "replayed": 2}


def test_during_a_rollout_unsigned_datagrams_count_until_the_node_signs(key_dir: Path) -> None:
    service = HeartbeatService("me", HeartbeatSettings(port=0), keys=KeyDirectory(str(key_dir)),
                               accept_unsigned=True, bind="::1")
    try:
        service.set_peers({"a": "::1"})
        send(service, Heartbeat("a", 1, 1).encode())  # an agent of the previous version
        service.catch_up()
        assert service.eligible() == {"a"}
        send(service, signed(1, inc=2))  # upgraded: from now on its unsigned datagrams are forgeries...
        service.catch_up()
        before = rejected("unauthenticated")
        send(service, Heartbeat("a", 2, 1).encode())  # ...except the unsigned twin of each signed one
        service.catch_up()
        assert rejected("unauthenticated") == before
        send(service, Heartbeat("a", 2, 2, leaving=True).encode())
        service.catch_up()
        assert service.eligible() == {"a"} and rejected("unauthenticated") == before + 1
    finally:
        service.stop()


def test_signing_agents_drop_the_unsigned_twins_of_a_peer_still_in_its_rollout(service: HeartbeatService) -> None:
    """After the rollout, while the flag is removed node by node, a node without it hears the unsigned
    copies its peers still send: not forgeries, not counted; any other unsigned datagram is."""
    send(service, signed(1), Heartbeat("a", 1, 1).encode())
    before = rejected("unauthenticated")
    service.catch_up()
    assert service.eligible() == {"a"} and rejected("unauthenticated") == before
    send(service, Heartbeat("a", 1, 2, leaving=True).encode(), Heartbeat("b", 1, 1).encode())
    service.catch_up()
    assert service.eligible() == {"a"} and rejected("unauthenticated") == before + 1


# name: (each peer's heartbeats as (node, times heard, ready, leaving), now, expected)
SILENCES = {
    "all-fell-silent-together": ([("a", [0.0, 0.1, 0.2], True, False), ("b", [0.05, 0.15, 0.25], True, False)],
                                 5.0, {"a", "b"}),
    "one-died-long-before-the-other": ([("a", [0.0, 0.1], True, False), ("b", [0.0, 0.1, 3.0, 3.1], True, False)],
                                       5.0, set()),
    "a-single-peer-is-a-failover": ([("a", [0.0, 0.1, 0.2], True, False)], 5.0, set()),
    "one-left-the-other-fell-silent": ([("a", [0.1, 0.2], True, True), ("b", [0.1, 0.2], True, False)], 5.0, set()),
    "one-still-heard": ([("a", [0.1, 0.2], True, False), ("b", [0.1, 4.8], True, False)], 5.0, set()),
    "starting-peers-are-not-presumed": ([("a", [0.1, 0.2], False, False), ("b", [0.1, 0.2], False, False)],
                                        5.0, set()),
    "two-of-three-together-the-third-long-gone": (
        [("a", [0.0], True, False), ("b", [2.0, 2.1], True, False), ("c", [2.0, 2.15], True, False)], 9.0, {"b", "c"}),
    "hours-later": ([("a", [0.1, 0.2], True, False), ("b", [0.1, 0.25], True, False)], 7200.0, {"a", "b"}),
    # At the moment the first is dead, the other is quiet but not dead yet: the cut is seen at once.
    "first-dead-second-quiet": ([("a", [0.0, 0.1, 0.2], True, False), ("b", [0.05, 0.15, 0.28], True, False)],
                                0.71, {"a", "b"}),
    "first-dead-second-briefly-quiet": ([("a", [0.0, 0.1, 0.2], True, False), ("b", [0.05, 0.15, 0.5], True, False)],
                                        0.71, set()),
    "first-dead-second-heard": ([("a", [0.0, 0.1, 0.2], True, False), ("b", [0.05, 0.15, 0.6], True, False)],
                                0.71, set()),
}


@pytest.mark.parametrize("name", list(SILENCES))
def test_peers_that_fell_silent_together(name: str) -> None:
    heard, now, expected = SILENCES[name]
    m = Membership("me", dead_after=0.5)
    for node, times, ready, leaving in heard:
        for seq, t in enumerate(times, 1):
            m.heard(hb(node, seq, ready=ready, leaving=leaving and seq == len(times)), t)
    m.sweep(now)
    assert m.fell_silent_together(now) == expected


def test_a_quiet_peer_heard_again_lets_a_held_back_failover_go_on():
    """a crashed; b was quiet at that moment (a loaded node), so a's silence looked like this node's
    own deafness. b's next heartbeat ends the presumption: a change to act on at once, although the
    eligible peers stay the same."""
    m = Membership("me", dead_after=0.5, together=0.2)
    m.heard(hb("a", 1), 0.0)
    m.heard(hb("b", 1), 0.2)
    m.sweep(0.51)  # a is dead; b alive but quiet for 0.31 s
    assert m.eligible(0.51) == {"b"} and m.fell_silent_together(0.51) == {"a", "b"}
    m.heard(hb("b", 2), 0.55)
    change = m.sweep(0.55)
    assert m.eligible(0.55) == {"b"} and m.fell_silent_together(0.55) == frozenset()
    assert change.eligible
