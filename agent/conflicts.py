"""Address conflicts (RFC 5227's rules, adapted to a load balancer), decided. Pure: no I/O, no
clock; the agent passes the time in.

- Which IPs are new: allocated, never announced by any of our nodes. Only those are probed
  before their first announcement, so a failover or a restart is never delayed by a probe.
- What a probe's frames mean: a foreign host uses the IP, or nobody answered.
- Defence: a foreign host claiming an IP we announce is answered once with a gratuitous
  announcement; a second claim within the defend interval is a persistent conflict, reported,
  and the policy says whether we keep defending or yield.

"Foreign" means a MAC that is none of our nodes': a peer's frames for an IP are a handover.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from .arp import ArpPacket
from .ndp import NEIGHBOR_ADVERT, NdPacket

# Kinds of conflict, as the L2NodeStatus record, the metric and the Service condition name them.
IN_USE = "InUse"  # a probe found a host outside the cluster using a new IP: not announced
CLAIMED = "Claimed"  # a host outside the cluster keeps claiming an IP we announce

# What to do about a persistent claim.
POLICY_DEFEND = "defend"  # keep announcing; re-announce at most once per defend interval
POLICY_YIELD = "yield"  # stop announcing the IP until no claim was heard for the clear-after time
POLICIES = (POLICY_DEFEND, POLICY_YIELD)


def new_ips(candidates: Iterable[str], recorded: Set[str], previous_owners: Mapping[str, str], me: str,
            announced_by_us: Set[str]) -> frozenset[str]:
    """Of `candidates` (IPs this node is about to claim), those no node of ours has announced:
    none is in any node's L2NodeStatus record (`recorded`), none was owned by a peer at this
    node's previous sync (a failover: the dead owner's record may be gone), and this process
    never announced it. Only these are probed."""
    out = set()
    for ip in candidates:
        if ip in recorded or ip in announced_by_us:
            continue
        if previous_owners.get(ip, me) != me:
            continue
        out.add(ip)
    return frozenset(out)


def probe_key(ip: str, services: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """What a probe's result is remembered under: the IP and its allocation (the holding
    Services' UIDs). A new allocation of the same IP is probed anew."""
    return ip, tuple(sorted(services))


def arp_in_use(pkt: ArpPacket, ip: bytes, ours: Set[bytes]) -> bytes | None:
    """During an ARP probe for `ip`: the MAC of a foreign host that uses it, if this frame shows
    one. Any ARP frame whose sender IP is `ip` (a reply to our probe, an announcement), or a probe
    of its own for `ip` (a host configuring it at the same time), from a MAC none of our nodes'."""
    if pkt.sha in ours or pkt.eth_src in ours:
        return None
    if pkt.spa == ip or (pkt.is_probe and pkt.tpa == ip):
        return pkt.sha
    return None


def nd_in_use(pkt: NdPacket, ip: bytes, ours: Set[bytes]) -> bytes | None:
    """During a DAD probe for `ip`: the MAC of a foreign host that uses it, if this frame shows
    one. A Neighbor Advertisement for `ip`, or a DAD probe of its own for `ip`, from a MAC none
    of our nodes'."""
    mac = pkt.lladdr or pkt.eth_src
    if mac in ours or pkt.eth_src in ours or pkt.target != ip:
        return None
    if pkt.type == NEIGHBOR_ADVERT or pkt.is_dad:
        return mac
    return None


# Actions on a foreign claim.
DEFEND = "Defend"  # send one gratuitous announcement now
REPORT = "Report"  # the claim persists: report it (and, with POLICY_DEFEND, also defend)
REPORT_AND_DEFEND = "ReportAndDefend"
IGNORE = "Ignore"  # within the defend interval of our last defence, already reported


@dataclass
class _Claim:
    mac: str
    first: float  # the first claim of this episode
    last: float  # the latest claim
    defended: float  # when we last defended
    persistent: bool = False


@dataclass(frozen=True)
class Conflict:
    """A persistent conflict, as reported."""

    ip: str
    mac: str
    kind: str
    since: float  # on the agent's clock; the agent turns it into a timestamp


class Defence:
    """The defend/persist/policy state machine of the IPs this node announces (RFC 5227 2.4).

    `claim` is called for each foreign claim (a frame from a MAC none of our nodes'); the answer
    says what to send. An episode ends when no claim was heard for `clear_after` seconds."""

    def __init__(self, defend_interval: float, clear_after: float, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"address conflict policy must be one of {', '.join(POLICIES)}")
        if not 0 < defend_interval <= clear_after:
            raise ValueError("need 0 < defend_interval <= clear_after")
        self.defend_interval = defend_interval
        self.clear_after = clear_after
        self.policy = policy
        self._claims: dict[str, _Claim] = {}

    def claim(self, ip: str, mac: str, now: float) -> str:
        c = self._claims.get(ip)
        if c is None or now - c.last >= self.clear_after:
            self._claims[ip] = _Claim(mac, now, now, now)
            return DEFEND
        c.last, c.mac = now, mac
        if now - c.defended < self.defend_interval:
            first_report = not c.persistent
            c.persistent = True
            if first_report:
                return REPORT
            return IGNORE
        # Past the defend interval since our last defence.
        if self.policy == POLICY_DEFEND or not c.persistent:
            c.defended = now
            return REPORT_AND_DEFEND if c.persistent else DEFEND
        return IGNORE

    def forget(self, keep: Set[str]) -> None:
        """Drop the IPs this node no longer owns (not yielded ones: a yield is ours to end)."""
        for ip in self._claims.keys() - keep:
            del self._claims[ip]

    def expire(self, now: float) -> None:
        for ip, c in list(self._claims.items()):
            if now - c.last >= self.clear_after:
                del self._claims[ip]

    def conflicts(self, now: float) -> dict[str, Conflict]:
        """The persistent conflicts not yet cleared."""
        return {ip: Conflict(ip, c.mac, CLAIMED, c.first) for ip, c in self._claims.items()
                if c.persistent and now - c.last < self.clear_after}

    def yielded(self, now: float) -> frozenset[str]:
        """With POLICY_YIELD: the IPs not to announce now."""
        if self.policy != POLICY_YIELD:
            return frozenset()
        return frozenset(self.conflicts(now))
