"""Which interfaces announce an IP.

Rule: the interfaces named by the L2Advertisement; else the ones carrying an address of this
node in a subnet containing the IP. veth, bridge-slave and NOARP interfaces are never chosen
unless named: a veth is a container's leg, a bridge slave's traffic belongs to its bridge, and
a NOARP link cannot answer ARP at all.

A node whose link went down can no longer announce on it, though its heartbeats may still reach
its peers over another network: it tells them what it `Lost`, and they elect around it.

Pure: the kernel's links are read by the agent (`leifur.agent.links`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network

@dataclass(frozen=True)
class Link:
    """One network interface as the selection rule sees it."""

    name: str
    index: int
    mac: str
    kind: str  # IFLA_INFO_KIND: "veth", "bridge", "vlan", "bond", "dummy", ...; "" for a physical NIC
    bridge_slave: bool
    noarp: bool
    up: bool  # administratively up and with carrier: a link without carrier reaches nobody
    loopback: bool
    networks: tuple[Network, ...]


def _parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def _matching_networks(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, link: Link) -> list[Network]:
    """The link's addresses whose subnet contains `addr` (link-local IPv6 never counts: it is per-link, not a LAN)."""
    return [
        n for n in link.networks
        if n.version == addr.version and not (n.version == 6 and n.ip.is_link_local) and addr in n.network
    ]


def _exclusions(link: Link, *, when_up: bool = False) -> list[str]:
    """Why an unnamed link may not announce (`when_up`: once up again), as phrases; empty if it may."""
    reasons = []
    if not link.up and not when_up:
        reasons.append("down (or has no carrier)")
    if link.loopback:
        reasons.append("the loopback")
    if link.kind == "veth":
        reasons.append("a veth")
    if link.bridge_slave:
        reasons.append("a bridge slave")
    if link.noarp:
        reasons.append("NOARP")
    return reasons


def select_interfaces(ip: str, links: Sequence[Link], named: Sequence[str] = ()) -> tuple[str, ...]:
    """The names of the interfaces that announce `ip`, sorted; empty if none may."""
    if named:
        up = {link.name for link in links if link.up}
        return tuple(sorted(set(named) & up))
    addr = _parse_ip(ip)
    if addr is None:
        return ()
    return tuple(sorted({
        link.name for link in links
        if not _exclusions(link) and _matching_networks(addr, link)
    }))


def _fmt_networks(networks: Sequence[Network]) -> str:
    return ", ".join(str(n) for n in networks)


def explain_no_interface(ip: str, links: Sequence[Link], named: Sequence[str] = ()) -> str:
    """One line telling an operator why `select_interfaces` found nothing ("" when it found something)."""
    if select_interfaces(ip, links, named):
        return ""
    by_name = {link.name: link for link in links}
    if named:
        problems = []
        for name in sorted(set(named)):
            link = by_name.get(name)
            problems.append(f"{name} does not exist on this node" if link is None else f"{name} is down")
        present = ", ".join(sorted(by_name)) or "none"
        return (f"none of the interfaces named by the L2Advertisement can announce {ip}: {'; '.join(problems)}"
                f" (interfaces on this node: {present})")
    addr = _parse_ip(ip)
    if addr is None:
        return f"{ip!r} is not an IP address"
    excluded = []
    nameable = False
    for link in sorted(links, key=lambda lk: lk.name):
        matching = _matching_networks(addr, link)
        if matching:
            reasons = _exclusions(link)
            excluded.append(f"{link.name} ({_fmt_networks(matching)}) is {' and '.join(reasons)}")
            # Naming overrides everything except being down.
            nameable = nameable or link.up
    if excluded:
        hint = "; name it in the L2Advertisement's interfaces to use it anyway" if nameable else ""
        return f"no usable interface carries an address in a subnet containing {ip}: {'; '.join(excluded)}{hint}"
    family = f"IPv{addr.version}"
    have = [
        f"{link.name} {_fmt_networks(nets)}"
        for link in sorted(links, key=lambda lk: lk.name)
        if not link.loopback
        and (nets := [n for n in link.networks if n.version == addr.version and not n.ip.is_link_local])
    ]
    seen = f"this node's {family} addresses: {'; '.join(have)}" if have else f"this node has no {family} address"
    return (f"no interface carries an address in a subnet containing {ip} ({seen}); if this node should announce it"
            f" anyway, name the interface in the L2Advertisement's interfaces")


@dataclass(frozen=True)
class Lost:
    """What a node cannot announce on because links of its are down, as its peers need to know it.

    `subnets`: the subnets that only its down links carry (an IP there has no interface on it by
    the subnet rule); `named`: the interface lists of L2Advertisements of which it has none up,
    at least one of them for being down. Only what went down: an interface a node never had is
    reported by the node elected anyway (NoInterface), not elected around.
    """

    subnets: tuple[Subnet, ...] = ()
    named: tuple[tuple[str, ...], ...] = ()

    def blocks(self, ip: str, named: Sequence[str] = ()) -> bool:
        """Whether the node cannot announce `ip` on the interfaces `named` (none: by subnet)."""
        if named:
            return tuple(sorted(set(named))) in self.named
        addr = _parse_ip(ip)
        return addr is not None and any(addr.version == n.version and addr in n for n in self.subnets)

    def __bool__(self) -> bool:
        return bool(self.subnets or self.named)

    def as_dict(self) -> dict[str, list[Any]]:
        """As heartbeats carry it and node records show it."""
        return {"subnets": [str(n) for n in self.subnets], "interfaces": [list(n) for n in self.named]}

    @classmethod
    def from_dict(cls, raw: object) -> Lost | None:
        """The Lost that `as_dict` gave, or None if `raw` is malformed."""
        if not isinstance(raw, dict):
            return None
        subnets, named = raw.get("subnets", []), raw.get("interfaces", [])
        if not (isinstance(subnets, list) and all(isinstance(s, str) for s in subnets) and isinstance(named, list)
                and all(isinstance(n, list) and n and all(isinstance(i, str) for i in n) for n in named)):
            return None
        try:
            nets = tuple(ipaddress.ip_network(s) for s in subnets)
        except ValueError:
            return None
        return cls(nets, tuple(tuple(sorted(set(n))) for n in named))


def lost(links: Sequence[Link], named_lists: Sequence[Sequence[str]] = ()) -> Lost:
    """What this node lost to its down links: the subnets only they carry, and the lists of
    `named_lists` with a down interface and none up. Never more than it lost: wherever the result
    `blocks` an IP, `select_interfaces` finds no interface for it."""
    up_subnets = [n.network for link in links if not _exclusions(link) for n in link.networks
                  if not (n.version == 6 and n.ip.is_link_local)]
    down = [link for link in links if not link.up]
    subnets: set[Subnet] = set()
    for link in down:
        if _exclusions(link, when_up=True):
            continue  # not usable when up either: nothing lost
        for n in link.networks:
            if not (n.version == 6 and n.ip.is_link_local):
                subnets |= _uncovered(n.network, up_subnets)
    down_names = {link.name for link in down}
    up_names = {link.name for link in links if link.up}
    named = {tuple(sorted(set(n))) for n in named_lists if set(n) & down_names and not set(n) & up_names}
    return Lost(tuple(sorted(subnets, key=lambda n: (n.version, n))), tuple(sorted(named)))


def _uncovered(subnet: Subnet, covering: Sequence[Subnet]) -> set[Subnet]:
    """The parts of `subnet` that no network in `covering` contains (CIDRs nest or are disjoint)."""
    parts: set[Subnet] = {subnet}
    for c in covering:
        if c.version != subnet.version:
            continue
        nxt: set[Subnet] = set()
        for p in parts:
            if p.subnet_of(c):  # type: ignore[arg-type]
                continue
            if c.subnet_of(p):  # type: ignore[arg-type]
                nxt |= set(p.address_exclude(c))  # type: ignore[arg-type]
            else:
                nxt.add(p)
        parts = nxt
    return parts
