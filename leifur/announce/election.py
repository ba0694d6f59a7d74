"""Who announces an IP: every agent computes the same answer from the same inputs, with no
coordination round. Pure: no I/O.

Ranking is rendezvous (highest-random-weight) hashing of (node, IP): a node leaving moves
only the IPs it owned, a node joining takes about 1/N of them, and nothing else moves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from leifur.announce.interfaces import Lost
from leifur.ipam.selectors import selects_by_labels, selects_by_name_or_labels
from leifur.model import names
from leifur.model.objects import Object


def weight(node: str, ip: str) -> int:
    """A stable pseudo-random weight of (node, IP), the same in every process and on every machine."""
    digest = hashlib.blake2b(f"{node}\0{ip}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(nodes: Iterable[str], ip: str) -> list[str]:
    """Nodes in order of preference for announcing `ip`; ties (never in practice) broken by name."""
    return sorted(set(nodes), key=lambda n: (-weight(n, ip), n))


def owner(nodes: Iterable[str], ip: str) -> str | None:
    """The node that announces `ip` among the eligible `nodes`, or None if there is none."""
    ranked = rank(nodes, ip)
    return ranked[0] if ranked else None


@dataclass(frozen=True)
class Advertisement:
    """An L2Advertisement, parsed: which pools, from which nodes, on which interfaces, how."""

    name: str
    pools: frozenset[str] = frozenset()
    pool_selectors: tuple[Mapping[str, Any], ...] = ()
    node_selectors: tuple[Mapping[str, Any], ...] = ()
    interfaces: tuple[str, ...] = ()
    mode: str = "Responder"

    def selects_pool(self, pool: str, pool_labels: Mapping[str, str]) -> bool:
        return selects_by_name_or_labels(self.pools, self.pool_selectors, pool, pool_labels)

    def selects_node(self, node_labels: Mapping[str, str]) -> bool:
        return selects_by_labels(self.node_selectors, node_labels)


def parse_advertisement(obj: Object) -> Advertisement:
    spec = obj.get("spec") or {}
    return Advertisement(
        name=obj["metadata"]["name"],
        pools=frozenset(spec.get("ipAddressPools") or ()),
        pool_selectors=tuple(spec.get("ipAddressPoolSelectors") or ()),
        node_selectors=tuple(spec.get("nodeSelectors") or ()),
        interfaces=tuple(spec.get("interfaces") or ()),
        mode=spec.get("mode") or "Responder",
    )


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    alive: bool = True


@dataclass(frozen=True)
class Announcement:
    """What the elected owner of an IP does: on which interfaces, in which mode."""

    ip: str
    node: str
    interfaces: tuple[str, ...]  # empty: the interface carrying the node's address in the IP's subnet
    mode: str


def eligible(
    nodes: Iterable[Node],
    pool: str,
    pool_labels: Mapping[str, str],
    advertisements: Iterable[Advertisement],
    local_traffic: bool = False,
    ready_endpoint_nodes: Iterable[str] = (),
) -> dict[str, list[Advertisement]]:
    """Nodes that may announce an IP of `pool`, each with the advertisements that let it.

    A node must be alive, not labelled for exclusion, and selected by an advertisement that
    selects the pool; with externalTrafficPolicy Local it must also have a ready endpoint.
    """
    ads = [a for a in advertisements if a.selects_pool(pool, pool_labels)]
    ready = set(ready_endpoint_nodes)
    out: dict[str, list[Advertisement]] = {}
    for node in nodes:
        if not node.alive or names.LABEL_EXCLUDE_LB in node.labels:
            continue
        if local_traffic and node.name not in ready:
            continue
        matching = [a for a in ads if a.selects_node(node.labels)]
        if matching:
            out[node.name] = sorted(matching, key=lambda a: a.name)
    return out


def elect(
    ip: str,
    nodes: Iterable[Node],
    pool: str,
    pool_labels: Mapping[str, str],
    advertisements: Iterable[Advertisement],
    local_traffic: bool = False,
    ready_endpoint_nodes: Iterable[str] | None = None,
    lost: Mapping[str, Lost] | None = None,
    eligible_nodes: Mapping[str, list[Advertisement]] | None = None,
) -> Announcement | None:
    """The announcement for one IP, or None when no node may announce it.

    A Service with no ready endpoint anywhere is not announced: `ready_endpoint_nodes` is the
    set of nodes with a ready endpoint (None when endpoints are not considered). A node whose
    `lost` links would leave it no interface for the IP is passed over, unless every candidate is:
    the one elected then reports why it cannot announce it. `eligible_nodes`: what `eligible`
    returns for these arguments, when the caller computed it already (it is the same for every IP
    of a pool).
    """
    ready = None if ready_endpoint_nodes is None else set(ready_endpoint_nodes)
    if ready is not None and not ready:
        return None
    candidates = (eligible_nodes if eligible_nodes is not None
                  else eligible(nodes, pool, pool_labels, advertisements, local_traffic, ready or ()))
    if lost:
        able = {n: ads for n, ads in candidates.items()
                if n not in lost or not lost[n].blocks(ip, interfaces_of(ads))}
        candidates = able or candidates
    chosen = owner(candidates, ip)
    if chosen is None:
        return None
    ads = candidates[chosen]
    interfaces = interfaces_of(ads)
    # Netlink wins if any selecting advertisement asks for it: the kernel then answers on every interface.
    mode = "Netlink" if any(a.mode == "Netlink" for a in ads) else "Responder"
    return Announcement(ip, chosen, interfaces, mode)


def interfaces_of(ads: Iterable[Advertisement]) -> tuple[str, ...]:
    """The interfaces a node announces on, by the advertisements that select it (empty: by subnet)."""
    return tuple(sorted({i for a in ads for i in a.interfaces}))
