"""What one node claims at one sync (leifur.agent.step): a table of cases, one per row. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from leifur.agent import step
from leifur.announce import plan
from leifur.announce.agreement import Agreement, Verdict, owners
from leifur.announce.election import rank
from leifur.announce.interfaces import Link
from leifur.model import names

NODES = ("n1", "n2", "n3")
IP = "192.0.2.40"
# The election's preference for IP: FIRST owns it while all are live.
FIRST, SECOND, THIRD = rank(NODES, IP)
# More IPs ranked alike, so that whoever owns IP owns them too.
IP2, IP3 = [ip for ip in (f"192.0.2.{i}" for i in range(41, 50)) if rank(NODES, ip) == [FIRST, SECOND, THIRD]][:2]
IP6 = next(ip for ip in (f"2001:db8::{i:x}" for i in range(0x41, 0x50)) if rank(NODES, ip)[0] == FIRST)
ALL = frozenset(NODES)


def link(name: str, *networks: str, up: bool = True, kind: str = "", index: int = 2) -> Link:
    return Link(name, index, "02:00:00:00:00:01", kind, bridge_slave=False, noarp=False, up=up, loopback=False,
                networks=tuple(ipaddress.ip_interface(n) for n in networks))


ETH0 = link("eth0", "192.0.2.1/24", "2001:db8::1/64")
LAN = (ETH0,)


def service(name: str, *ips: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {names.ANN_ALLOCATED_FROM_POOL: "lan"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def cluster(ips: tuple[str, ...], ad_spec: dict) -> plan.Cluster:
    services = [service(f"svc{i}", ip) for i, ip in enumerate(ips)]
    slices = [{"metadata": {"name": f"{s['metadata']['name']}-x", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": s["metadata"]["name"]}},
               "endpoints": [{"addresses": ["198.51.100.7"], "nodeName": n} for n in NODES]} for s in services]
    pool = {"metadata": {"name": "lan"}, "spec": {"addresses": ["192.0.2.40-192.0.2.49", "2001:db8::40/124"]}}
    nodes = [{"metadata": {"name": n}} for n in NODES]
    return plan.Cluster(services, slices, nodes, [pool], [{"metadata": {"name": "ad"}, "spec": ad_spec}])


def disagreeing(me: str, now: float) -> Verdict:
    """THIRD owned IP and IP2 at the last agreement, `me` IP3 and IP6; since t=1 THIRD decides
    differently (patience 10 s)."""
    g = Agreement(me, patience=10.0)
    g.observe("v1", {THIRD: "v1"}, {IP: THIRD, IP2: THIRD, IP3: me, IP6: me}, now=0.0)
    g.observe("v2", {THIRD: "v1"}, {IP: me, IP2: me, IP3: me, IP6: me}, now=1.0)
    return g.verdict(now)


VERDICTS = {
    "agreed": lambda me: Agreement(me, patience=10.0).verdict(0.0),
    "pending": lambda me: disagreeing(me, now=2.0),
    "impatient": lambda me: disagreeing(me, now=11.0),
}


@dataclass(frozen=True)
class Case:
    id: str
    want_claims: dict[str, tuple[tuple[str, ...], str]]  # ip -> (interfaces, mode)
    want_withheld: dict[str, str] = field(default_factory=dict)  # ip -> reason
    me: str = FIRST
    ips: tuple[str, ...] = (IP,)
    claimed: frozenset[str] = frozenset()
    agreement: str = "agreed"
    live: frozenset[str] = ALL
    starting: frozenset[str] = frozenset()
    previous_owners: dict[str, str] = field(default_factory=dict)  # at the node's previous sync
    links: tuple[Link, ...] = LAN
    ad_spec: dict = field(default_factory=dict)
    want_message: str = ""  # in the explanation of every NO_INTERFACE
    new: frozenset[str] = frozenset()  # never announced by any of our nodes
    probed: dict[str, str] = field(default_factory=dict)
    yielded: frozenset[str] = frozenset()


ON_ETH0 = (("eth0",), "Responder")
CASES = [
    Case("owns-and-claims", {IP: ON_ETH0}),
    Case("not-the-owner", {}, me=SECOND),
    Case("a-claimed-ip-stays-claimed", {IP: ON_ETH0}, claimed=frozenset({IP})),
    Case("ipv6-on-the-interface-of-its-subnet", {IP6: ON_ETH0}, ips=(IP6,)),
    Case("agreement-pending-holds-a-new-ip-but-keeps-a-claimed-one", {IP2: ON_ETH0},
         {IP: step.HELD_FOR_AGREEMENT}, ips=(IP, IP2), claimed=frozenset({IP2}), agreement="pending"),
    Case("agreement-pending-does-not-hold-an-ip-whose-agreed-owner-is-dead", {IP: ON_ETH0},
         agreement="pending", live=ALL - {THIRD}),
    Case("impatient-agreement-announces-anyway", {IP: ON_ETH0, IP2: ON_ETH0},
         ips=(IP, IP2), agreement="impatient"),
    Case("starting-peer-would-own-holds-a-new-ip", {}, {IP: step.RESERVED_FOR_STARTING_PEER},
         me=SECOND, live=ALL - {FIRST}, starting=frozenset({FIRST})),
    Case("starting-peer-does-not-affect-a-claimed-ip", {IP: ON_ETH0},
         me=SECOND, live=ALL - {FIRST}, starting=frozenset({FIRST}), claimed=frozenset({IP})),
    Case("starting-peer-that-would-not-own-changes-nothing", {IP: ON_ETH0},
         live=ALL - {THIRD}, starting=frozenset({THIRD})),
    Case("starting-peer-still-reserves-when-a-live-node-owned-it", {}, {IP: step.RESERVED_FOR_STARTING_PEER},
         me=SECOND, live=ALL - {FIRST}, starting=frozenset({FIRST}), previous_owners={IP: SECOND}),
    Case("a-failover-is-not-reserved-for-the-restarting-owner", {IP: ON_ETH0},
         me=SECOND, live=ALL - {FIRST}, starting=frozenset({FIRST}), previous_owners={IP: FIRST}),
    Case("a-failover-is-not-reserved-for-another-starting-peer", {IP: ON_ETH0},
         me=SECOND, live=frozenset({SECOND}), starting=frozenset({FIRST}), previous_owners={IP: THIRD}),
    Case("held-for-agreement-before-a-starting-peer", {}, {IP: step.HELD_FOR_AGREEMENT},
         me=SECOND, live=ALL - {FIRST}, starting=frozenset({FIRST}), agreement="pending"),
    Case("no-interface-in-the-subnet", {}, {IP: step.NO_INTERFACE},
         links=(link("eth0", "198.51.100.1/24"),),
         want_message=f"no interface carries an address in a subnet containing {IP}"),
    Case("a-veth-in-the-subnet-is-not-chosen", {}, {IP: step.NO_INTERFACE},
         links=(link("veth0", "192.0.2.9/24", kind="veth"),), want_message="veth0 (192.0.2.9/24) is a veth"),
    Case("held-for-agreement-is-not-a-missing-interface", {}, {IP: step.HELD_FOR_AGREEMENT},
         agreement="pending", links=()),
    Case("named-interface", {IP: (("eth1",), "Responder")},
         links=(ETH0, link("eth1", index=3)), ad_spec={"interfaces": ["eth1"]}),
    Case("named-interface-down", {}, {IP: step.NO_INTERFACE},
         links=(ETH0, link("eth1", up=False, index=3)), ad_spec={"interfaces": ["eth1"]},
         want_message="eth1 is down"),
    Case("named-interface-missing", {}, {IP: step.NO_INTERFACE},
         ad_spec={"interfaces": ["bond0"]}, want_message="bond0 does not exist on this node"),
    Case("netlink-mode", {IP: (("eth0",), "Netlink")}, ad_spec={"mode": "Netlink"}),
    Case("a-new-ip-waits-for-its-probe", {}, {IP: step.PROBING}, new=frozenset({IP})),
    Case("a-new-ip-whose-probe-passed-is-claimed", {IP: ON_ETH0}, new=frozenset({IP}),
         probed={IP: step.PROBE_CLEAR}),
    Case("a-new-ip-in-use-by-a-foreign-host-is-not-claimed", {}, {IP: step.ADDRESS_IN_USE},
         new=frozenset({IP}), probed={IP: step.PROBE_IN_USE}),
    Case("an-ip-not-new-is-claimed-without-a-probe", {IP: ON_ETH0}),
    Case("a-claimed-ip-is-never-withheld-for-a-probe", {IP: ON_ETH0}, claimed=frozenset({IP}), new=frozenset({IP})),
    Case("the-agreement-holds-before-the-probe", {}, {IP: step.HELD_FOR_AGREEMENT},
         agreement="pending", new=frozenset({IP})),
    Case("no-interface-is-reported-before-a-probe", {}, {IP: step.NO_INTERFACE}, new=frozenset({IP}),
         links=(link("eth0", "198.51.100.1/24"),), want_message="no interface carries an address"),
    Case("a-yielded-ip-is-not-claimed-even-if-claimed-now", {}, {IP: step.YIELDED}, claimed=frozenset({IP}),
         yielded=frozenset({IP})),
]


def run(case: Case) -> step.Outcome:
    c = cluster(case.ips, case.ad_spec)
    live = case.live
    decisions = plan.decide_announcements(c, live)
    return step.step(step.Inputs(case.me, c, live, decisions, case.claimed, VERDICTS[case.agreement](case.me),
                                 case.starting, case.links, previous_owners=case.previous_owners,
                                 new=case.new, probed=case.probed, yielded=case.yielded))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_step(case: Case) -> None:
    outcome = run(case)
    assert {ip: (c.interfaces, c.mode) for ip, c in outcome.claims.items()} == case.want_claims
    assert {ip: w.reason for ip, w in outcome.withheld.items()} == case.want_withheld
    for ip, w in outcome.withheld.items():
        assert w.decision.ip == ip
        if w.reason == step.NO_INTERFACE:
            assert case.want_message and case.want_message in w.message
        else:
            assert w.message == ""


def test_due_is_what_is_claimed_or_to_report_never_what_waits() -> None:
    """A held IP is no problem (yet): only claims and missing interfaces are due."""
    c = cluster((IP, IP2, IP3, IP6), {})
    decisions = plan.decide_announcements(c, ALL)
    v6_only = (link("eth0", "2001:db8::1/64"),)
    outcome = step.step(step.Inputs(FIRST, c, ALL, decisions, frozenset({IP2}), disagreeing(FIRST, 2.0),
                                    frozenset(), v6_only))
    assert set(outcome.claims) == {IP6}
    assert outcome.held(step.HELD_FOR_AGREEMENT) == {IP}
    assert outcome.held(step.NO_INTERFACE) == {IP2, IP3}
    assert outcome.due == {IP6, IP2, IP3}


def test_claims_and_withheld_come_in_the_order_of_the_ips() -> None:
    """The agent logs and reports in this order: it must not depend on set iteration."""
    c = cluster((IP3, IP2, IP), {})
    decisions = plan.decide_announcements(c, ALL)
    agreed = VERDICTS["agreed"](FIRST)
    claimed = step.step(step.Inputs(FIRST, c, ALL, decisions, frozenset(), agreed, frozenset(), LAN))
    assert list(claimed.claims) == [IP, IP2, IP3]
    unclaimed = step.step(step.Inputs(FIRST, c, ALL, decisions, frozenset(), agreed, frozenset(), ()))
    assert list(unclaimed.withheld) == [IP, IP2, IP3]


def test_a_failover_is_not_reserved_even_once_the_survivors_agree():
    """Driven the way the agent drives it: the owner dies, the survivors' views agree at once
    (as in a two-node cluster), and the restarting owner is heard starting."""
    c = cluster((IP,), {})
    before = plan.decide_announcements(c, ALL)
    assert before[IP].announcement.node == FIRST
    g = Agreement(SECOND, patience=10.0)
    g.observe("v0", {FIRST: "v0", THIRD: "v0"}, owners(before), now=0.0)
    live = ALL - {FIRST}
    after = plan.decide_announcements(c, live)
    g.observe("v1", {THIRD: "v1"}, owners(after), now=1.0)  # the survivors agree on the new owner
    outcome = step.step(step.Inputs(SECOND, c, live, after, frozenset(), g.verdict(1.0), frozenset({FIRST}), LAN,
                                    previous_owners=owners(before)))
    assert set(outcome.claims) == {IP}, outcome.withheld


def _node(name: str, *conditions: tuple[str, str]) -> dict:
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": t, "status": s} for t, s in conditions]}}


# name: (nodes in the API, expected of the silent peers {"a", "b"})
PRESUMED = {
    "ready-nodes": ([_node("a", ("Ready", "True")), _node("b", ("Ready", "True"))], {"a", "b"}),
    "no-kubelet-report-yet": ([_node("a"), _node("b")], {"a", "b"}),
    "one-not-ready": ([_node("a", ("Ready", "False")), _node("b", ("Ready", "True"))], {"b"}),
    "one-unknown": ([_node("a", ("Ready", "Unknown")), _node("b", ("MemoryPressure", "False"))], {"b"}),
    "one-deleted": ([_node("b")], {"b"}),
}


@pytest.mark.parametrize("name", list(PRESUMED))
def test_presumed_alive(name: str) -> None:
    nodes, expected = PRESUMED[name]
    assert step.presumed_alive(frozenset({"a", "b"}), nodes) == expected
