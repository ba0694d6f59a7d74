"""Which nodes advertise every assigned IP over BGP, to which peers, with what attributes. Pure.

The agent takes its own `node_intent`; `leifurctl explain` shows `decide_bgp`, so what the CLI
says is what the agents do. Unlike layer 2 there is no election: every eligible node advertises
(the router spreads traffic over them, ECMP), and a dead node's routes leave with its session.

An IP is advertised from a node to a peer when:
- Leifur allocated it from a pool (the same rule as layer 2: `plan.pool_of`);
- a BGPAdvertisement selects the pool, the node and the peer;
- the BGPPeer selects the node, and it is usable on that node (see `node_peers`);
- every Service on the IP has a ready endpoint; with externalTrafficPolicy Local, on that node;
- the node is not labelled for exclusion from external load balancers.
Advertisements that overlap on a prefix and a peer merge: the union of their communities and the
highest local preference, so that adding an advertisement never takes an attribute away.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from leifur.announce import plan
from leifur.announce.bgp_intent import BFD, NodeIntent, Route, Session
from leifur.announce.bgp_objects import (
    BGPAdvertisement,
    Peer,
    community_order,
    parse_bfd_profile,
    parse_bgp_advertisement,
    parse_peer,
)
from leifur.announce.election import Node
from leifur.model import names
from leifur.model.objects import Object, key_of
from leifur.model.service import IP

# Why an IP is advertised by no node (plan's OUTSIDE_POOLS, NO_ENDPOINTS and UNUSABLE apply too).
NO_BGP_ADVERTISEMENT = "NoBGPAdvertisement"
NO_BGP_NODE = "NoBGPNode"
NO_BGP_PEER = "NoBGPPeer"

# Kinds a Problem is about.
PEER = names.BGP_PEER
ADVERTISEMENT = names.BGP_ADVERTISEMENT
BFD_PROFILE = names.BFD_PROFILE

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """Something wrong with a BGP object, to report on it; the rest keeps working."""

    kind: str
    name: str
    message: str


@dataclass(frozen=True)
class Path:
    """One node advertising an IP to one peer."""

    node: str
    peer: str
    route: Route


@dataclass(frozen=True)
class BGPDecision:
    ip: str
    services: tuple[str, ...]
    pool: str | None
    paths: tuple[Path, ...] = ()  # empty: advertised by no node, and `reason` says why
    reason: str = ""
    message: str = ""


@dataclass
class Parsed:
    """The BGP objects that parse, and what is wrong with the others."""

    peers: list[Peer] = field(default_factory=list)
    advertisements: list[BGPAdvertisement] = field(default_factory=list)
    bfd: dict[str, BFD] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def of(cls, cluster: plan.Cluster) -> Parsed:
        problems: list[Problem] = []
        return cls(_each(PEER, cluster.peers, parse_peer, problems),
                   _each(ADVERTISEMENT, cluster.bgp_advertisements, parse_bgp_advertisement, problems),
                   {b.name: b for b in _each(BFD_PROFILE, cluster.bfd_profiles, parse_bfd_profile, problems)},
                   problems)


def _each(kind: str, objs: Iterable[Object], parse: Callable[[Object], T], problems: list[Problem]) -> list[T]:
    """Every object that parses, in the order of their names; a Problem for each that does not."""
    out = []
    for obj in sorted(objs, key=lambda o: o["metadata"]["name"]):
        try:
            out.append(parse(obj))
        except (ValueError, TypeError, KeyError) as e:
            problems.append(Problem(kind, obj["metadata"]["name"], str(e)))
    return out


def problems(cluster: plan.Cluster) -> list[Problem]:
    """Everything wrong with the BGP objects: specs that do not parse, names that point nowhere,
    advertisements that select nothing, and peers a node cannot use."""
    parsed = Parsed.of(cluster)
    out = list(parsed.problems)
    # Against every BGPPeer, parsed or not: a broken peer is reported on itself, not on its advertisements.
    peer_names = {o["metadata"]["name"] for o in cluster.peers}
    for peer in parsed.peers:
        if peer.bfd_profile and peer.bfd_profile not in parsed.bfd:
            out.append(Problem(PEER, peer.name, f"BFDProfile {peer.bfd_profile} does not exist; "
                               "the session runs without BFD until it does"))
    pools = plan.Pools.of(cluster)
    for ad in parsed.advertisements:
        if missing := sorted(ad.peers - peer_names):
            out.append(Problem(ADVERTISEMENT, ad.name, f"no BGPPeer named {', '.join(missing)}"))
        if not any(ad.selects_pool(p, pools.labels.get(p, {})) for p in pools.labels):
            out.append(Problem(ADVERTISEMENT, ad.name, "selects no IPAddressPool"))
        elif not any(ad.selects_peer(p) for p in peer_names):
            out.append(Problem(ADVERTISEMENT, ad.name, "selects no BGPPeer"))
    for obj in cluster.nodes:
        node = plan.node_of(obj, frozenset())
        _, dropped = node_peers(parsed.peers, node.labels)
        out.extend(Problem(PEER, p.name, f"node {node.name}: {why}") for p, why in dropped)
    return sorted(set(out), key=lambda p: (p.kind, p.name, p.message))


def node_peers(peers: Iterable[Peer], node_labels: Mapping[str, str]) -> tuple[list[Peer], list[tuple[Peer, str]]]:
    """The peers a node opens sessions with, and those it cannot use, with the reason.

    A node runs one BGP instance, so it has one ASN of its own: the first peer by name that
    selects the node sets it, and a peer asking for another is dropped on that node (reported)
    rather than guessed at. Two peers with one address would be one neighbour to the daemon:
    the first by name wins.
    """
    used: list[Peer] = []
    dropped: list[tuple[Peer, str]] = []
    for peer in sorted(peers, key=lambda p: p.name):
        if not peer.selects_node(node_labels):
            continue
        if used and peer.my_asn != used[0].my_asn:
            dropped.append((peer, f"myASN {peer.my_asn} differs from {used[0].my_asn} of BGPPeer "
                                  f"{used[0].name}; a node has one ASN"))
        elif other := next((p for p in used if p.address == peer.address), None):
            dropped.append((peer, f"peerAddress {peer.address} is BGPPeer {other.name}'s too"))
        else:
            used.append(peer)
    return used, dropped


# What the IPs of one pool under one set of allowed nodes get: per (node, peer), the
# advertisements that carry them. The same for every IP of the scope.
Carriers = dict[tuple[str, str], list[BGPAdvertisement]]


def _scope(pool: str, pool_labels: Mapping[str, str], allowed: frozenset[str] | None, nodes: list[Node],
           usable: Mapping[str, list[Peer]], ads: list[BGPAdvertisement]) -> Carriers:
    selecting = [a for a in ads if a.selects_pool(pool, pool_labels)]
    carriers: Carriers = {}
    for node in nodes:
        if names.LABEL_EXCLUDE_LB in node.labels or (allowed is not None and node.name not in allowed):
            continue
        for ad in selecting:
            if not ad.selects_node(node.labels):
                continue
            for peer in usable.get(node.name, ()):
                if ad.selects_peer(peer.name):
                    carriers.setdefault((node.name, peer.name), []).append(ad)
    return carriers


def _route(addr: IP, ads: Iterable[BGPAdvertisement]) -> list[Route]:
    """The routes the advertisements give one IP: one per distinct prefix, attributes merged."""
    by_prefix: dict[str, list[Route]] = {}
    for ad in ads:
        length = ad.aggregation_length if addr.version == 4 else ad.aggregation_length_v6
        prefix = str(ipaddress.ip_network(f"{addr}/{length}", strict=False))
        by_prefix.setdefault(prefix, []).append(
            Route(prefix, ad.communities, ad.large_communities, ad.local_preference))
    return [merged(group) for _, group in sorted(by_prefix.items())]


def merged(routes: list[Route]) -> Route:
    """One route for a prefix that several advertisements or IPs (an aggregate) give: the union
    of their communities and the highest local preference."""
    prefs = [r.local_preference for r in routes if r.local_preference is not None]
    return Route(routes[0].prefix,
                 tuple(sorted({c for r in routes for c in r.communities}, key=community_order)),
                 tuple(sorted({c for r in routes for c in r.large_communities}, key=community_order)),
                 max(prefs) if prefs else None)


def decide_bgp(cluster: plan.Cluster, load_balancer_class: str | None = None,
               parsed: Parsed | None = None) -> dict[str, BGPDecision]:
    """IP -> BGPDecision for every IP in the status of a LoadBalancer Service of ours; `parsed`:
    the cluster's BGP objects, when the caller parsed them already."""
    parsed = parsed or Parsed.of(cluster)
    pools = plan.Pools.of(cluster)
    nodes = [plan.node_of(n, frozenset()) for n in cluster.nodes]
    usable = {n.name: node_peers(parsed.peers, n.labels)[0] for n in nodes}
    ready = plan.ready_endpoint_nodes(cluster.endpoint_slices)
    scopes: dict[tuple[str, frozenset[str] | None], Carriers] = {}
    out = {}
    for ip, (addr, svcs) in plan.held_ips(cluster, load_balancer_class).items():
        keys = tuple(sorted(key_of(s) for s in svcs))
        out[ip] = _decide_ip(addr, keys, svcs, pools, parsed, nodes, usable, ready, scopes)
    return out


def _decide_ip(addr: IP, keys: tuple[str, ...], svcs: list[Object], pools: plan.Pools, parsed: Parsed,
               nodes: list[Node], usable: Mapping[str, list[Peer]], ready: dict[str, set[str]],
               scopes: dict[tuple[str, frozenset[str] | None], Carriers]) -> BGPDecision:
    ip = str(addr)
    if (refused := plan.unusable(addr, keys)) is not None:
        return BGPDecision(ip, keys, None, (), refused.reason, refused.message)
    pool = plan.pool_of(addr, svcs, pools.parsed, pools.broken)
    if pool is None:
        refused = plan.outside_pools(ip, keys)
        return BGPDecision(ip, keys, None, (), refused.reason, refused.message)
    labels = pools.labels.get(pool, {})
    if not any(a.selects_pool(pool, labels) for a in parsed.advertisements):
        return BGPDecision(ip, keys, pool, (), NO_BGP_ADVERTISEMENT, f"no BGPAdvertisement selects pool {pool}")
    allowed, unready = plan.allowed_nodes(svcs, ready)
    if unready:
        return BGPDecision(ip, keys, pool, (), plan.NO_ENDPOINTS, f"{unready} has no ready endpoint")
    scope_key = (pool, None if allowed is None else frozenset(allowed))
    if scope_key not in scopes:
        scopes[scope_key] = _scope(pool, labels, scope_key[1], nodes, usable, parsed.advertisements)
    carriers = scopes[scope_key]
    if not carriers:
        return _nobody(ip, keys, pool, labels, allowed, nodes, usable, parsed)
    paths = tuple(Path(node, peer, route) for (node, peer), ads in sorted(carriers.items())
                  for route in _route(addr, ads))
    return BGPDecision(ip, keys, pool, paths)


def _nobody(ip: str, keys: tuple[str, ...], pool: str, labels: Mapping[str, str], allowed: set[str] | None,
            nodes: list[Node], usable: Mapping[str, list[Peer]], parsed: Parsed) -> BGPDecision:
    """Why no node advertises an IP whose pool a BGPAdvertisement selects."""
    ads = [a for a in parsed.advertisements if a.selects_pool(pool, labels)]
    selected = [n for n in nodes
                if names.LABEL_EXCLUDE_LB not in n.labels and any(a.selects_node(n.labels) for a in ads)]
    if not selected:
        return BGPDecision(ip, keys, pool, (), NO_BGP_NODE,
                           f"no node is selected by a BGPAdvertisement of pool {pool} "
                           f"(nodeSelectors, or the {names.LABEL_EXCLUDE_LB} label)")
    if allowed is not None and not any(n.name in allowed for n in selected):
        return BGPDecision(ip, keys, pool, (), NO_BGP_NODE,
                           f"externalTrafficPolicy Local: no node with a ready endpoint "
                           f"({', '.join(sorted(allowed)) or 'none'}) is selected by a BGPAdvertisement of pool {pool}")
    return BGPDecision(ip, keys, pool, (), NO_BGP_PEER,
                       f"no BGPPeer selected by a BGPAdvertisement of pool {pool} selects its nodes "
                       f"({', '.join(sorted(n.name for n in selected))})")


def node_intent(cluster: plan.Cluster, node: str, load_balancer_class: str | None = None) -> NodeIntent:
    """Every session `node` opens and every route it advertises on them."""
    obj = next((n for n in cluster.nodes if n["metadata"]["name"] == node), None)
    if obj is None:
        return NodeIntent(router_id="")
    parsed = Parsed.of(cluster)
    peers, _ = node_peers(parsed.peers, plan.node_of(obj, frozenset()).labels)
    routes: dict[str, dict[str, list[Route]]] = {p.name: {} for p in peers}
    for decision in decide_bgp(cluster, load_balancer_class, parsed).values():
        for path in decision.paths:
            if path.node == node:
                routes[path.peer].setdefault(path.route.prefix, []).append(path.route)
    return NodeIntent(
        router_id=_router_id(peers, obj),
        sessions=tuple(_session(p, parsed.bfd) for p in peers),
        routes={peer: tuple(merged(rs) for _, rs in sorted(by_prefix.items()))
                for peer, by_prefix in routes.items()},
    )


def _session(peer: Peer, profiles: Mapping[str, BFD]) -> Session:
    return Session(peer=peer.name, address=peer.address, peer_asn=peer.peer_asn, my_asn=peer.my_asn,
                   port=peer.port, hold_time_s=peer.hold_time_s, keepalive_time_s=peer.keepalive_time_s,
                   ebgp_multihop=peer.ebgp_multihop, source_address=peer.source_address,
                   password_secret=peer.password_secret,
                   bfd=profiles.get(peer.bfd_profile) if peer.bfd_profile else None)


def _router_id(peers: list[Peer], node: Object) -> str:
    """The first routerID a peer of the node names, else the node's first IPv4 InternalIP, else ""
    (the daemon chooses): stable across restarts, so the router sees the same speaker."""
    if chosen := next((p.router_id for p in peers if p.router_id), None):
        return chosen
    for addr in (node.get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP":
            try:
                if ipaddress.ip_address(addr.get("address", "")).version == 4:
                    return str(addr["address"])
            except ValueError:
                continue
    return ""


def overlaps(cluster: plan.Cluster) -> dict[str, str]:
    """BGPAdvertisement -> how it overlaps others: both send a pool's IPs to one peer with different
    attributes, and the routes carry the union of communities and the highest local preference."""
    parsed = Parsed.of(cluster)
    pools = plan.Pools.of(cluster)
    peer_names = sorted(p.name for p in parsed.peers)
    found: dict[str, set[str]] = {}
    ads = parsed.advertisements
    for i, a in enumerate(ads):
        for b in ads[i + 1:]:
            if (a.communities, a.large_communities, a.local_preference) == (
                    b.communities, b.large_communities, b.local_preference):
                continue
            shared_pools = [p for p, labels in sorted(pools.labels.items())
                            if a.selects_pool(p, labels) and b.selects_pool(p, labels)]
            shared_peers = [p for p in peer_names if a.selects_peer(p) and b.selects_peer(p)]
            if shared_pools and shared_peers:
                where = f"pool {', '.join(shared_pools)} to {', '.join(shared_peers)}"
                found.setdefault(a.name, set()).add(f"BGPAdvertisement {b.name} ({where})")
                found.setdefault(b.name, set()).add(f"BGPAdvertisement {a.name} ({where})")
    return {name: ("overlaps " + "; ".join(sorted(others)) + " with other attributes: a route both give "
                   "carries the union of their communities and the highest localPref")
            for name, others in found.items()}
