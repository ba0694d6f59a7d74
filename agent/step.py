"""What this node claims at one sync, from everything the agent read for it.

The agent reads (the cluster, its peers, the kernel's links), calls `step`, then applies the
result to the announcers. Pure: no I/O, no clock; the agreement's answer is taken at a time the
agent chose.

An IP this node owns is claimed unless one of these holds it back, checked in this order:
- the agreement: a live peer may still announce it from an older view (`agreement.py`);
- a starting peer would own it once ready: claiming it for a moment would only move it twice
  (unless it is a failover: its agreed owner is gone, and waiting would leave it dark);
- no interface of this node can announce it: a problem to report, with the explanation;
- it is new (never announced by any of our nodes, `conflicts.new_ips`) and its probe has not
  passed yet: it waits for the probe, or a foreign host uses it and it is not announced;
- a persistent foreign claim made this node yield it (`--address-conflict-policy yield`).
The agreement, the reserve and the probe apply only to IPs not claimed yet: an IP already
announced stays announced (unless yielded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from leifur.announce import interfaces, plan
from leifur.announce.agreement import Verdict

# Why an IP this node owns is not claimed.
HELD_FOR_AGREEMENT = "HeldForAgreement"
RESERVED_FOR_STARTING_PEER = "ReservedForStartingPeer"
NO_INTERFACE = "NoInterface"
PROBING = "Probing"  # new: waiting for its probe (the agent starts it for these)
ADDRESS_IN_USE = "AddressInUse"  # new, and its probe found a foreign host using it
YIELDED = "Yielded"  # a foreign host claims it persistently and the policy is to yield

# A probe's results, as `Inputs.probed` gives them.
PROBE_CLEAR = "Clear"
PROBE_IN_USE = "InUse"


@dataclass(frozen=True)
class Inputs:
    """Everything one sync decides from."""

    node: str
    cluster: plan.Cluster
    live: frozenset[str]  # nodes that may announce now, this one included
    decisions: Mapping[str, plan.Decision]  # plan.decide_announcements(cluster, live, load_balancer_class)
    claimed: frozenset[str]  # IPs this node announces now
    agreement: Verdict
    starting: frozenset[str]  # peers alive but not ready yet, first heard within the start reserve
    links: tuple[interfaces.Link, ...]
    load_balancer_class: str | None = None
    # Who owned each IP at this node's previous sync: an owner gone since makes the IP a failover.
    previous_owners: Mapping[str, str] = field(default_factory=dict)
    # IPs never announced by any of our nodes (conflicts.new_ips), and the probe results of this
    # allocation of each (PROBE_CLEAR / PROBE_IN_USE; absent: not probed yet).
    new: frozenset[str] = frozenset()
    probed: Mapping[str, str] = field(default_factory=dict)
    yielded: frozenset[str] = frozenset()
    lost: Mapping[str, interfaces.Lost] = field(default_factory=dict)  # as `decisions` were made with


@dataclass(frozen=True)
class Claim:
    """An IP to announce, and how."""

    decision: plan.Decision
    interfaces: tuple[str, ...]
    mode: str


@dataclass(frozen=True)
class Withheld:
    """An IP this node owns but does not claim, and why (`message` explains NO_INTERFACE)."""

    decision: plan.Decision
    reason: str
    message: str = ""
    interfaces: tuple[str, ...] = ()  # where it would be announced (PROBING: where to probe)


@dataclass(frozen=True)
class Outcome:
    # Both in the decisions' order (IPs sorted as strings), which is the order the agent logs and reports in.
    claims: Mapping[str, Claim]
    withheld: Mapping[str, Withheld]

    def held(self, reason: str) -> frozenset[str]:
        return frozenset(ip for ip, w in self.withheld.items() if w.reason == reason)

    @property
    def due(self) -> frozenset[str]:
        """IPs this node should announce now: claimed, or a problem to report."""
        return frozenset(self.claims) | self.held(NO_INTERFACE)


def step(given: Inputs) -> Outcome:
    """What `given.node` claims, and why it claims none of the other IPs it owns."""
    owned = {ip: d for ip, d in given.decisions.items()
             if d.announcement is not None and d.announcement.node == given.node}
    gains = owned.keys() - given.claimed
    held = given.agreement.held_back(gains, given.live)
    reserved = _reserved_for_starting(given, gains - held)
    claims: dict[str, Claim] = {}
    withheld: dict[str, Withheld] = {}
    for ip, d in owned.items():
        if ip in held:
            withheld[ip] = Withheld(d, HELD_FOR_AGREEMENT)
        elif ip in reserved:
            withheld[ip] = Withheld(d, RESERVED_FOR_STARTING_PEER)
        elif ip in given.yielded:
            withheld[ip] = Withheld(d, YIELDED)
        else:
            claim = _claim(ip, d, given.links)
            if not isinstance(claim, Claim):
                withheld[ip] = claim
            elif ip in gains and ip in given.new and given.probed.get(ip) != PROBE_CLEAR:
                reason = ADDRESS_IN_USE if given.probed.get(ip) == PROBE_IN_USE else PROBING
                withheld[ip] = Withheld(d, reason, interfaces=claim.interfaces)
            else:
                claims[ip] = claim
    return Outcome(claims, withheld)


def _reserved_for_starting(given: Inputs, gains: Set[str]) -> set[str]:
    """The gains a starting peer would own once ready, except failovers."""
    # An IP whose owner at our previous sync is gone (crashed, or restarting and so not ready) is
    # dark now. Not the agreement's owners: once the survivors agree, they name the new owner.
    before = given.previous_owners
    gains = {ip for ip in gains if before.get(ip) in (None, given.node) or before[ip] in given.live}
    if not given.starting or not gains:
        return set()  # spares deciding a second time, on nearly every sync
    later = plan.decide_announcements(given.cluster, given.live | given.starting, given.load_balancer_class,
                                      given.lost)
    reserved = set()
    for ip in gains:
        a = later[ip].announcement
        if a is not None and a.node in given.starting:
            reserved.add(ip)
    return reserved


def _claim(ip: str, d: plan.Decision, links: tuple[interfaces.Link, ...]) -> Claim | Withheld:
    assert d.announcement is not None  # only owned IPs get here
    named = d.announcement.interfaces
    ifaces = interfaces.select_interfaces(ip, links, named)
    if not ifaces:
        return Withheld(d, NO_INTERFACE, interfaces.explain_no_interface(ip, links, named))
    return Claim(d, ifaces, d.announcement.mode)


def presumed_alive(silent: frozenset[str], nodes: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Of the peers that fell silent together, those whose Node still exists and is not reported
    NotReady by its kubelet: a whole rack losing power is then taken over once its Nodes turn
    NotReady (about 40 s), rather than never. A Node without a Ready condition (no kubelet
    reported yet) is not excluded."""
    by_name = {n["metadata"]["name"]: n for n in nodes}
    out = set()
    for name in silent:
        node = by_name.get(name)
        if node is None:
            continue
        conditions = (node.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") != "True" for c in conditions):
            continue
        out.add(name)
    return frozenset(out)
