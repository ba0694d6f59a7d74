"""Address conflicts, decided (leifur.agent.conflicts): which IPs are new, what a probe's frames
mean, and the defend/persist/policy state machine. Tables, one row per case. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from leifur.agent import arp, conflicts, ndp
from leifur.agent.conflicts import DEFEND, IGNORE, REPORT, REPORT_AND_DEFEND, Defence

ME, PEER = "n1", "n2"
IP = "192.0.2.40"


@dataclass(frozen=True)
class NewCase:
    id: str
    want_new: bool
    recorded: frozenset[str] = frozenset()
    previous_owners: dict[str, str] = field(default_factory=dict)
    announced_by_us: frozenset[str] = frozenset()


NEW_CASES = [
    NewCase("never-seen-is-new", True),
    NewCase("in-a-nodes-record-is-not-new", False, recorded=frozenset({IP})),
    NewCase("owned-by-a-peer-at-the-previous-sync-is-a-failover", False, previous_owners={IP: PEER}),
    NewCase("owned-by-this-node-at-the-previous-sync-is-still-new", True, previous_owners={IP: ME}),
    NewCase("announced-by-this-process-before-is-not-new", False, announced_by_us=frozenset({IP})),
]


@pytest.mark.parametrize("case", NEW_CASES, ids=[c.id for c in NEW_CASES])
def test_new_ips(case: NewCase) -> None:
    got = conflicts.new_ips([IP], case.recorded, case.previous_owners, ME, case.announced_by_us)
    assert (IP in got) == case.want_new


def test_probe_key_is_the_ip_and_its_allocation_in_any_order() -> None:
    assert conflicts.probe_key(IP, ["b", "a"]) == conflicts.probe_key(IP, ["a", "b"])
    assert conflicts.probe_key(IP, ["a"]) != conflicts.probe_key(IP, ["c"])


OURS = b"\x02\x00\x00\x00\x00\x11"
PEER_MAC = b"\x02\x00\x00\x00\x00\x12"
FOREIGN = b"\x02\x00\x00\x00\x00\x3e"
IP4 = arp.packed_ipv4(IP)
OTHER4 = "192.0.2.41"


def arp_reply(sender_mac: bytes, spa: str, tpa: str = "0.0.0.0") -> bytes:
    return (arp.BROADCAST + sender_mac + arp.ETH_P_ARP.to_bytes(2, "big") + bytes.fromhex("000108000604")
            + arp.OP_REPLY.to_bytes(2, "big") + sender_mac + arp.packed_ipv4(spa) + OURS + arp.packed_ipv4(tpa))


ARP_CASES = [
    ("a-foreign-reply-to-our-probe", arp_reply(FOREIGN, IP), FOREIGN),
    ("a-foreign-announcement", arp.build_gratuitous(IP, FOREIGN)[0], FOREIGN),
    ("a-foreign-simultaneous-probe", arp.build_request(FOREIGN, "0.0.0.0", IP), FOREIGN),
    ("a-peers-answer-is-a-handover-not-a-conflict", arp_reply(PEER_MAC, IP), None),
    ("our-own-probe-come-back", arp.build_request(OURS, "0.0.0.0", IP), None),
    ("a-question-for-the-ip-from-a-client-is-no-use", arp.build_request(FOREIGN, OTHER4, IP), None),
    ("another-ip-is-none-of-our-business", arp_reply(FOREIGN, OTHER4), None),
]


@pytest.mark.parametrize("frame,want", [(f, w) for _, f, w in ARP_CASES], ids=[c[0] for c in ARP_CASES])
def test_arp_in_use(frame: bytes, want: bytes | None) -> None:
    assert conflicts.arp_in_use(arp.parse(frame), IP4, {OURS, PEER_MAC}) == want


IP6 = "2001:db8::40"
IP6P = ndp.packed_ipv6(IP6)


def dad_answer(mac: bytes, target: str = IP6) -> bytes:
    return ndp.build_solicited_na(ndp.parse(ndp.build_solicit(OURS, "::", target)), mac)


ND_CASES = [
    ("a-foreign-answer-to-our-dad-probe", dad_answer(FOREIGN), FOREIGN),
    ("a-foreign-unsolicited-advertisement", ndp.build_unsolicited_na(IP6, FOREIGN), FOREIGN),
    ("a-foreign-simultaneous-dad-probe", ndp.build_solicit(FOREIGN, "::", IP6), FOREIGN),
    ("a-peers-advertisement-is-a-handover", ndp.build_unsolicited_na(IP6, PEER_MAC), None),
    ("our-own-dad-probe-come-back", ndp.build_solicit(OURS, "::", IP6), None),
    ("a-clients-solicitation-is-no-use", ndp.build_solicit(FOREIGN, "2001:db8::62", IP6), None),
    ("another-target-is-none-of-our-business", dad_answer(FOREIGN, "2001:db8::41"), None),
]


@pytest.mark.parametrize("frame,want", [(f, w) for _, f, w in ND_CASES], ids=[c[0] for c in ND_CASES])
def test_nd_in_use(frame: bytes, want: bytes | None) -> None:
    assert conflicts.nd_in_use(ndp.parse(frame), IP6P, {OURS, PEER_MAC}) == want


# The state machine: claims at these times (defend interval 10 s, clear after 30 s) and the
# actions they get; then what is reported and yielded at the end.
@dataclass(frozen=True)
class DefenceCase:
    id: str
    policy: str
    claims: tuple[float, ...]
    want_actions: tuple[str, ...]
    want_reported_at_end: bool
    want_yielded_at_end: bool = False
    end: float | None = None  # default: just after the last claim


DEFENCE_CASES = [
    DefenceCase("a-single-claim-is-defended-and-not-reported", "defend", (0,), (DEFEND,), False),
    DefenceCase("a-claim-within-the-defend-interval-is-reported", "defend", (0, 1), (DEFEND, REPORT), True),
    DefenceCase("a-persistent-claim-is-reported-once", "defend", (0, 1, 2), (DEFEND, REPORT, IGNORE), True),
    DefenceCase("a-claim-after-the-defend-interval-is-defended-again-not-reported", "defend", (0, 11),
                (DEFEND, DEFEND), False),
    DefenceCase("defend-policy-re-announces-once-per-interval", "defend", (0, 1, 5, 11, 12, 22),
                (DEFEND, REPORT, IGNORE, REPORT_AND_DEFEND, IGNORE, REPORT_AND_DEFEND), True),
    DefenceCase("yield-policy-stops-defending-a-persistent-claim", "yield", (0, 1, 11),
                (DEFEND, REPORT, IGNORE), True, want_yielded_at_end=True),
    DefenceCase("a-conflict-clears-after-quiet", "defend", (0, 1), (DEFEND, REPORT), False, end=31.0),
    DefenceCase("a-yield-ends-after-quiet", "yield", (0, 1), (DEFEND, REPORT), False, end=31.0),
    DefenceCase("after-clearing-a-claim-starts-a-new-episode", "defend", (0, 1, 40), (DEFEND, REPORT, DEFEND),
                False),
]


@pytest.mark.parametrize("case", DEFENCE_CASES, ids=[c.id for c in DEFENCE_CASES])
def test_defence(case: DefenceCase) -> None:
    d = Defence(10.0, 30.0, case.policy)
    actions = tuple(d.claim(IP, "02:00:00:00:00:3e", float(t)) for t in case.claims)
    assert actions == case.want_actions
    end = case.end if case.end is not None else case.claims[-1] + 0.5
    reported = d.conflicts(end)
    assert (IP in reported) == case.want_reported_at_end
    if case.want_reported_at_end:
        assert reported[IP].kind == conflicts.CLAIMED and reported[IP].mac == "02:00:00:00:00:3e"
    assert (IP in d.yielded(end)) == case.want_yielded_at_end


def test_defence_forgets_ips_no_longer_owned() -> None:
    d = Defence(10.0, 30.0, "defend")
    d.claim(IP, "m", 0.0)
    d.claim(IP, "m", 1.0)
    d.forget(set())
    assert d.conflicts(2.0) == {}


@pytest.mark.parametrize("args", [(10.0, 30.0, "fight"), (0.0, 30.0, "defend"), (40.0, 30.0, "defend")],
                         ids=["unknown-policy", "zero-interval", "interval-past-clear-after"])
def test_defence_refuses_bad_settings(args: tuple[float, float, str]) -> None:
    with pytest.raises(ValueError):
        Defence(*args)
