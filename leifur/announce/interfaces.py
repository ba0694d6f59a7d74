"""Which interfaces announce an IP.

Rule: the interfaces named by the L2Advertisement; else the ones carrying an address of this
node in a subnet containing the IP. veth, bridge-slave and NOARP interfaces are never chosen
unless named: a veth is a container's leg, a bridge slave's traffic belongs to its bridge, and
a NOARP link cannot answer ARP at all.

Pure: the kernel's links are read by the agent (`leifur.agent.links`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Interface | ipaddress.IPv6Interface

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


def _exclusions(link: Link) -> list[str]:
    """Why an unnamed link may not announce, as phrases; empty if it may."""
    reasons = []
    if not link.up:
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
