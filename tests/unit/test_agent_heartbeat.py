"""Liveness bookkeeping among agents: who is alive and ready, from heartbeats. No sockets."""

from __future__ import annotations

import select
import socket

from leifur.agent.heartbeat import Heartbeat, HeartbeatService, Membership, decode
from leifur.model.settings import HeartbeatSettings


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
    assert not m.heard(hb("a", 5, inc=2, ready=False), 0.1)  # duplicate
    assert not m.heard(hb("a", 9, inc=1, ready=False), 0.1)  # older incarnation
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


def test_a_restarted_agent_is_accepted_even_if_its_clock_went_back():
    m = Membership("me", dead_after=0.5)
    m.heard(hb("a", 50, inc=1000), 0.0)
    # While the old incarnation is alive, an older one is a stale datagram.
    assert not m.heard(hb("a", 1, inc=900), 0.1)
    # Once it is dead (crash) or leaving, another incarnation is a restart, whatever its number.
    m.sweep(1.0)
    assert m.heard(hb("a", 1, inc=900), 1.0).eligible
    assert m.eligible(1.0) == {"a"}
    m.heard(hb("a", 2, inc=900, leaving=True), 1.1)
    assert m.heard(hb("a", 1, inc=800), 1.2).eligible


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


def test_a_starved_receive_thread_does_not_make_live_peers_look_dead():
    """Heartbeats queued on the socket count before a decision (catch_up), even if the receive
    thread has not run: here it never started, as if the CPU had been busy elsewhere. Loopback only."""
    service = HeartbeatService("me", HeartbeatSettings(port=0), bind="::1")
    try:
        service.set_peers({"a": "::1"})
        port = service._sock.getsockname()[1]
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer:
            peer.bind(("::1", 0))
            for seq in (1, 2):
                peer.sendto(hb("a", seq).encode(), ("::1", port))
            assert select.select([service._queued], [], [], 5)[0]  # queued on the socket
            assert service.eligible() == frozenset()  # nothing read yet: "a" looks absent
            service.catch_up()
            assert service.eligible() == {"a"}
            service.catch_up()  # an empty queue returns at once
    finally:
        service.stop()
