"""The agent's view of this node's interfaces, read from the kernel (the rules are in leifur.announce.interfaces)."""

from __future__ import annotations

import ipaddress
import logging
import select
import threading
from collections.abc import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_LINK

from leifur.announce.interfaces import Link, Network

from .netlink import LEIFUR_IFA_PROTO

log = logging.getLogger(__name__)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_NOARP = 0x80
IFF_LOWER_UP = 0x10000


def _network(msg) -> Network | None:
    # IFA_LOCAL is this host's address; on a point-to-point link IFA_ADDRESS is the peer's.
    addr = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
    if not addr:
        return None
    return ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")


def read_links() -> list[Link]:
    """Every interface of the current network namespace, with its addresses.

    Addresses Leifur added itself in netlink mode are left out: they say which IPs this node
    announces, not which subnets it sits in.
    """
    with IPRoute() as ipr:
        raw_links = list(ipr.get_links())
        raw_addrs = list(ipr.addr("dump"))
    kinds = {m["index"]: m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "" for m in raw_links}
    networks: dict[int, list[Network]] = {}
    for msg in raw_addrs:
        if msg.get("IFA_PROTO") == LEIFUR_IFA_PROTO:
            continue
        net = _network(msg)
        if net is not None:
            networks.setdefault(msg["index"], []).append(net)
    links = []
    for m in raw_links:
        flags = m["flags"]
        master = m.get("IFLA_MASTER")
        slave_kind = m.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_KIND")
        links.append(Link(
            name=m.get("IFLA_IFNAME"),
            index=m["index"],
            mac=m.get("IFLA_ADDRESS") or "",
            kind=kinds[m["index"]],
            bridge_slave=slave_kind == "bridge" or (master is not None and kinds.get(master) == "bridge"),
            noarp=bool(flags & IFF_NOARP),
            up=bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP),
            loopback=bool(flags & IFF_LOOPBACK),
            networks=tuple(networks.get(m["index"], ())),
        ))
    return links


def watch_links(on_change: Callable[[], None], stop: threading.Event) -> threading.Thread:
    """A thread calling `on_change` whenever a link of this namespace changes (up, down, carrier),
    until `stop` is set: a node that lost its link says so within milliseconds, not at its next
    periodic sync."""
    def run() -> None:
        try:
            with IPRoute() as ipr:
                ipr.bind(groups=RTMGRP_LINK)
                while not stop.is_set():
                    if select.select([ipr.fileno()], [], [], 0.5)[0]:
                        ipr.get()
                        on_change()
        except Exception:  # the periodic sync still reads the links: slower, not blind
            log.exception("watching the links failed; link changes are seen at the periodic sync only")

    t = threading.Thread(target=run, name="links", daemon=True)
    t.start()
    return t
