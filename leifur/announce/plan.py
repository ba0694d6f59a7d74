"""Who announces every assigned IP, from the cluster's objects and the set of live nodes. Pure.

The agent and `leifurctl explain` call the same function, so what the CLI says is what the
agents do. For each IP in a Service's status the decision is either an Announcement (which
node, which interfaces, which mode) or a reason why nobody announces it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address

from leifur.announce.election import (
    Advertisement,
    Announcement,
    Node,
    elect,
    eligible,
    interfaces_of,
    parse_advertisement,
)
from leifur.announce.interfaces import Lost
from leifur.ipam.errors import PoolError
from leifur.ipam.pool import Pool, parse_pool
from leifur.model import names
from leifur.model.objects import Object, key_of
from leifur.model.service import IP, ingress_ips, is_ours

# Why an IP is not announced (also shown by leifurctl explain).
OUTSIDE_POOLS = "OutsidePools"
NO_ENDPOINTS = "NoReadyEndpoints"
NO_NODE = "NoEligibleNode"
NO_ADVERTISEMENT = "NoAdvertisement"
UNUSABLE = "UnusableAddress"


@dataclass(frozen=True)
class Decision:
    ip: str
    services: tuple[str, ...]  # namespace/name of every Service holding the IP (more than one when shared)
    pool: str | None
    announcement: Announcement | None
    reason: str = ""  # why there is no announcement
    message: str = ""


@dataclass(frozen=True)
class Cluster:
    """The objects the decision needs, as the API returns them (dicts)."""

    services: list[Object] = field(default_factory=list)
    endpoint_slices: list[Object] = field(default_factory=list)
    nodes: list[Object] = field(default_factory=list)
    pools: list[Object] = field(default_factory=list)
    advertisements: list[Object] = field(default_factory=list)
    # BGP mode (bgp_plan.py).
    peers: list[Object] = field(default_factory=list)
    bgp_advertisements: list[Object] = field(default_factory=list)
    bfd_profiles: list[Object] = field(default_factory=list)


def ready_endpoint_nodes(slices: Iterable[Object]) -> dict[str, set[str]]:
    """Service key -> nodes with at least one ready endpoint ("" for endpoints without a nodeName)."""
    out: dict[str, set[str]] = {}
    for s in slices:
        meta = s.get("metadata") or {}
        svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if not svc:
            continue
        nodes = out.setdefault(f"{meta.get('namespace')}/{svc}", set())
        for ep in s.get("endpoints") or []:
            # The API says a nil "ready" is to be read as ready.
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            nodes.add(ep.get("nodeName") or "")
    return out


def parse_pools(objs: Iterable[Object]) -> list[Pool]:
    """Every pool that parses; a broken pool is the controller's to report, not ours."""
    pools = []
    for obj in objs:
        try:
            pools.append(parse_pool(obj["metadata"]["name"], obj.get("spec") or {}))
        except (PoolError, KeyError, TypeError, ValueError):
            continue
    return pools


def interface_lists(cluster: Cluster, node: str) -> set[tuple[str, ...]]:
    """The interface lists `node` would announce on if elected, pool by pool (interfaces.lost needs
    them: only this node's links tell whether it has one of a list up)."""
    me = [node_of(n, frozenset({node})) for n in cluster.nodes if n["metadata"]["name"] == node]
    ads = [parse_advertisement(a) for a in cluster.advertisements]
    out = set()
    for obj in cluster.pools:
        name = obj["metadata"]["name"]
        for selecting in eligible(me, name, obj["metadata"].get("labels") or {}, ads).values():
            if named := interfaces_of(selecting):
                out.add(named)
    return out


def node_of(obj: Object, live: frozenset[str]) -> Node:
    meta = obj.get("metadata") or {}
    return Node(meta["name"], dict(meta.get("labels") or {}), alive=meta["name"] in live)


def decide_announcements(cluster: Cluster, live: Iterable[str], load_balancer_class: str | None = None,
                         lost: Mapping[str, Lost] | None = None, *,
                         before: tuple[frozenset[str], Mapping[str, Decision]] | None = None) -> dict[str, Decision]:
    """IP -> Decision for every IP in the status of a LoadBalancer Service of ours.

    `live` is the set of nodes whose agent is alive and ready (this node included if it is);
    `lost`, what links going down took from some of them (interfaces.Lost). `before`: the live
    nodes and the decisions of a call on the same cluster, class and lost; when nodes have only
    left since, only the IPs whose owner left are decided again (the same answer: see _unmoved).
    """
    live = frozenset(live)
    if before is not None and live <= before[0]:
        unmoved = _unmoved(before[1], live)
        if len(unmoved) == len(before[1]):
            return dict(before[1])
        decide = _decider(cluster, live, lost)
        services = {key_of(s): (i, s) for i, s in enumerate(cluster.services)}
        return {ip: unmoved.get(ip) or decide(ip_address(ip), [s for _, s in sorted(services[k] for k in d.services)])
                for ip, d in before[1].items()}
    decide = _decider(cluster, live, lost)
    return {ip: decide(addr, svcs) for ip, (addr, svcs) in held_ips(cluster, load_balancer_class).items()}


def _unmoved(decisions: Mapping[str, Decision], live: frozenset[str]) -> dict[str, Decision]:
    """The decisions that nodes leaving cannot change: every one but those whose owner left.

    Ranking is rendezvous hashing: the owner ranks first among the candidates, and is first among
    any subset of them that holds it. Nothing else in a decision depends on who is live: with no
    owner it says why (no endpoints, no advertisement, no eligible node), which fewer live nodes
    do not change, and the owner's interfaces and mode come from the advertisements.
    """
    return {ip: d for ip, d in decisions.items() if d.announcement is None or d.announcement.node in live}


def _decider(cluster: Cluster, live: frozenset[str], lost: Mapping[str, Lost] | None) -> Callable[
        [IP, list[Object]], Decision]:
    """Decides one IP (its Services given) in `cluster`, parsing what every IP shares only once."""
    pools = Pools.of(cluster)
    ads = [parse_advertisement(a) for a in cluster.advertisements]
    nodes = [node_of(n, live) for n in cluster.nodes]
    ready = ready_endpoint_nodes(cluster.endpoint_slices)
    # Which nodes may announce an IP depends on its pool and its Services' endpoints only: worked
    # out once per pool (and Local set), not once per IP (most of a sync's work at 5,000 Services).
    eligibility: dict[tuple[str, frozenset[str] | None], dict[str, list[Advertisement]]] = {}
    return lambda addr, svcs: _decide_ip(addr, svcs, pools, ads, nodes, ready, lost, eligibility)


@dataclass(frozen=True)
class Pools:
    """The pools that parse, the names of those that do not, and every pool's labels."""

    parsed: list[Pool]
    broken: set[str]
    labels: dict[str, Mapping[str, str]]

    @classmethod
    def of(cls, cluster: Cluster) -> Pools:
        parsed = parse_pools(cluster.pools)
        return cls(parsed, {o["metadata"]["name"] for o in cluster.pools} - {p.name for p in parsed},
                   {o["metadata"]["name"]: (o["metadata"].get("labels") or {}) for o in cluster.pools})


def held_ips(cluster: Cluster, load_balancer_class: str | None) -> dict[str, tuple[IP, list[Object]]]:
    """IP -> (the IP, every Service of ours showing it), in the order of the IPs' text."""
    held: dict[str, tuple[IP, list[Object]]] = {}
    for svc in cluster.services:
        if not is_ours(svc, load_balancer_class):
            continue
        for ip in ingress_ips(svc):
            held.setdefault(str(ip), (ip, []))[1].append(svc)
    return dict(sorted(held.items()))


def unusable(addr: IP, keys: tuple[str, ...]) -> Decision | None:
    """The Decision for an IP no mode may announce (multicast and the like), or None."""
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback or addr.is_link_local:
        return Decision(str(addr), keys, None, None, UNUSABLE, f"{addr} cannot be announced on a LAN (multicast, "
                        "loopback, link-local or unspecified)")
    return None


def outside_pools(ip: str, keys: tuple[str, ...]) -> Decision:
    return Decision(ip, keys, None, None, OUTSIDE_POOLS,
                    f"{ip} was not allocated from an IPAddressPool by Leifur; it is not announced")


def allowed_nodes(svcs: list[Object], ready: dict[str, set[str]]) -> tuple[set[str] | None, str | None]:
    """The nodes every Service on an IP is reachable through (None: any node), and the first
    Service with no ready endpoint anywhere (which leaves the IP unannounced), if one has none."""
    allowed: set[str] | None = None
    for svc in svcs:
        key = key_of(svc)
        with_endpoints = ready.get(key, set())
        if not with_endpoints:
            return allowed, key
        if (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local":
            allowed = with_endpoints if allowed is None else allowed & with_endpoints
    return allowed, None


def pool_of(addr: IP, svcs: list[Object], pools: list[Pool], broken: set[str]) -> str | None:
    """The name of the pool the controller allocated `ip` from, by the annotation it writes on the Service.

    Without the annotation the IP was not allocated by Leifur (another implementation, or a hand
    edit of the status): it is not announced. A pool shrunk under a live allocation no longer
    contains the IP but still names it: the Service keeps its IP (no renumbering), so it stays
    announced until the user moves it. So does an IP of a pool edited into a spec that does not
    parse (`broken`): the controller reports the typo and keeps the allocations, and a typo must
    not take the IPs off the LAN. An IP that its named pools no longer contain but another pool
    does (an overlapping pool deleted) counts as that pool's, as the controller credits it.
    """
    named: set[str] = set()
    for s in svcs:
        value = (s["metadata"].get("annotations") or {}).get(names.ANN_ALLOCATED_FROM_POOL) or ""
        named |= {p.strip() for p in value.split(",") if p.strip()}
    candidates = [p for p in pools if p.name in named]
    for p in candidates:
        if p.contains(addr):
            return p.name
    if named & broken:
        return min(named & broken)
    if not named:
        return None
    containing = next((p.name for p in sorted(pools, key=lambda p: p.name) if p.contains(addr)), None)
    return containing or next((p.name for p in candidates if addr.version in p.families()), None)


def _decide_ip(addr: IP, svcs: list[Object], pools: Pools, ads: list[Advertisement], nodes: list[Node],
               ready: dict[str, set[str]], lost: Mapping[str, Lost] | None,
               eligibility: dict[tuple[str, frozenset[str] | None], dict[str, list[Advertisement]]]) -> Decision:
    ip = str(addr)
    keys = tuple(sorted(key_of(s) for s in svcs))
    if (refused := unusable(addr, keys)) is not None:
        return refused
    pool = pool_of(addr, svcs, pools.parsed, pools.broken)
    if pool is None:
        return outside_pools(ip, keys)
    labels = pools.labels.get(pool, {})
    if not any(a.selects_pool(pool, labels) for a in ads):
        return Decision(ip, keys, pool, None, NO_ADVERTISEMENT,
                        f"no L2Advertisement selects pool {pool}")
    # Every Service on the IP must be reachable through the chosen node: intersect their demands.
    allowed, unready = allowed_nodes(svcs, ready)
    if unready:
        return Decision(ip, keys, pool, None, NO_ENDPOINTS, f"{unready} has no ready endpoint")
    candidates = [n for n in nodes if allowed is None or n.name in allowed]
    scope = (pool, None if allowed is None else frozenset(allowed))
    if scope not in eligibility:
        eligibility[scope] = eligible(candidates, pool, labels, ads)
    announcement = elect(ip, candidates, pool, labels, ads, lost=lost, eligible_nodes=eligibility[scope])
    if announcement is None:
        return Decision(ip, keys, pool, None, NO_NODE, _no_node_message(ip, nodes, allowed, pool, labels, ads))
    return Decision(ip, keys, pool, announcement)


def _no_node_message(ip: str, nodes: list[Node], allowed: set[str] | None, pool: str,
                     labels: Mapping[str, str], ads: list[Advertisement]) -> str:
    if not nodes:
        return "no Node objects"
    if allowed is not None and not any(n.name in allowed for n in nodes):
        return f"externalTrafficPolicy Local: no node with a ready endpoint ({', '.join(sorted(allowed))}) exists"
    selectable = eligible([Node(n.name, n.labels) for n in nodes if allowed is None or n.name in allowed],
                          pool, labels, ads)
    if not selectable:
        return (f"no node is selected by an L2Advertisement of pool {pool} "
                f"(nodeSelectors, or the {names.LABEL_EXCLUDE_LB} label)")
    return f"no eligible node has a live agent (eligible: {', '.join(sorted(selectable))})"
