"""What status and explain conclude from a Snapshot, with the controller's and the agents' own code. Pure.

- Allocation: the pools are parsed and the allocator rebuilt from Services' status as the controller
  does at start (`reconcile.State`, `Allocator.adopt`), and a Service's request is decided with
  `allocation.allocate`, the function the controller calls.
- Announcement: `announce.plan.decide_announcements`, the function every agent calls. Liveness of agents is not in
  the API (agents hear each other's heartbeats), so the nodes that have an `L2NodeStatus` stand in
  for the live agents, and the `L2NodeStatus` records say who announces what.
- BGP: `announce.bgp_plan.decide_bgp`, the agents' function, with each node's sessions as its record
  lists them: a route leaves a node only on an Established session.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from leifur.announce import bgp_plan, plan
from leifur.announce.interfaces import Lost
from leifur.cli.snapshot import Snapshot
from leifur.controller.bgp_status import record_sessions
from leifur.controller.reconcile import State
from leifur.ipam.pool import Pool
from leifur.model import names

# States of an IP on the LAN, beyond plan's reasons (OutsidePools, NoAdvertisement, NoReadyEndpoints, NoEligibleNode).
ANNOUNCED = "Announced"
ADVERTISED = "Advertised"  # not announced on the LAN, but advertised over BGP on an Established session
NO_SESSION = "NoEstablishedSession"  # nodes should advertise it over BGP, and none has its session up
ESTABLISHED = "Established"
SERVED = (ANNOUNCED, ADVERTISED)
NOT_ANNOUNCED = "NotAnnounced"  # an agent should announce it, and its record does not list it
MULTIPLE = "MultipleAnnouncers"  # more than one node's record lists it
PENDING = "Pending"  # no IP and no word from the controller yet
DELETING = "Deleting"


def condition(svc: dict) -> dict | None:
    """The controller's condition leifur.io/IPAllocated on the Service, if any."""
    for c in (svc.get("status") or {}).get("conditions") or []:
        if c.get("type") == names.COND_SERVICE_ALLOCATED:
            return c
    return None


@dataclass
class Rebuilt:
    state: State
    # Two Services' status claiming one IP they may not share: (the younger Service, its holders, what is wrong).
    conflicts: list[tuple[str, list[str], str]] = field(default_factory=list)


def rebuild(snap: Snapshot, lb_class: str | None) -> Rebuilt:
    """The controller's state after a restart: pools parsed, and every IP in our Services' status adopted,
    oldest Service first (the same order and rules as the controller's rebuild)."""
    state = State()
    state.refresh_pools(snap.pools)
    return Rebuilt(state, state.adopt_all(snap.services, lb_class))


def pool_usage(state: State, pool: Pool) -> dict[int, tuple[int, int]]:
    """Per family: (usable addresses, addresses held), counted as the controller counts for the pool's status."""
    held = state.holders_in(pool)
    return {v: (pool.size(v), len({ip for ips in held.values() for ip in ips if ip.version == v}))
            for v in sorted(pool.families())}


@dataclass
class IPState:
    """Where one assigned IP stands on the LAN."""

    ip: str
    services: tuple[str, ...]
    pool: str | None
    state: str  # ANNOUNCED, or why not
    message: str
    announced_by: list[dict] = field(default_factory=list)  # the records: {node, interfaces, mode, since}
    expected_node: str | None = None  # the owner by the agents' rule, among the agents seen
    owner_if_all_live: str | None = None  # the owner if every Node's agent were live
    advertised_by: list[dict] = field(default_factory=list)  # BGP: {node, peer, prefix, ..., session}

    def as_dict(self) -> dict:
        return {"ip": self.ip, "services": list(self.services), "pool": self.pool, "state": self.state,
                "message": self.message, "announcedBy": self.announced_by, "expectedNode": self.expected_node,
                "ownerIfAllAgentsLive": self.owner_if_all_live, "advertisedBy": self.advertised_by}


def agents_seen(snap: Snapshot) -> list[str]:
    return sorted(o["metadata"]["name"] for o in snap.node_statuses)


def links_lost(snap: Snapshot) -> dict[str, Lost]:
    """Node -> what its down links keep it from announcing, as its record says (agents elect around it)."""
    out = {}
    for obj in snap.node_statuses:
        lost = Lost.from_dict((obj.get("status") or {}).get("lost") or {})
        if lost:
            out[obj["metadata"]["name"]] = lost
    return out


def records(snap: Snapshot) -> dict[str, list[dict]]:
    """IP -> what the agents' L2NodeStatus objects say about it, one entry per node announcing it."""
    out: dict[str, list[dict]] = {}
    for obj in sorted(snap.node_statuses, key=lambda o: o["metadata"]["name"]):
        for a in (obj.get("status") or {}).get("announcements") or []:
            if not isinstance(a, dict) or not a.get("ip"):
                continue
            try:
                ip = str(ipaddress.ip_address(str(a["ip"])))
            except ValueError:
                continue
            out.setdefault(ip, []).append({
                "node": obj["metadata"]["name"], "interfaces": list(a.get("interfaces") or []),
                "mode": a.get("mode"), "since": a.get("since"), "services": list(a.get("services") or []),
                "pool": a.get("pool")})
    return out


def _where(r: dict) -> str:
    ifaces = ", ".join(r["interfaces"]) or "its default interface"
    return f"{r['node']} on {ifaces} ({r['mode'] or 'Responder'})"


def cluster_of(snap: Snapshot) -> plan.Cluster:
    return plan.Cluster(snap.services, snap.endpoint_slices, snap.nodes, snap.pools, snap.advertisements,
                        peers=snap.peers, bgp_advertisements=snap.bgp_advertisements, bfd_profiles=snap.bfd_profiles)


def bgp_configured(snap: Snapshot) -> bool:
    return bool(snap.peers or snap.bgp_advertisements)


def sessions(snap: Snapshot) -> list[dict]:
    """Every node's BGP sessions, as its record lists them."""
    return [{"node": node, "peer": s["peer"], "address": s.get("address"), "state": s.get("state"),
             "since": s.get("since"), "prefixesAdvertised": s.get("prefixesAdvertised"), "bfd": s.get("bfd")}
            for node, s in record_sessions(snap.node_statuses)]


def session_problems(snap: Snapshot) -> list[str]:
    """A session a node's plan wants and that is not Established, and what is wrong with the BGP objects."""
    out = [f"{p.kind} {p.name}: {p.message}" for p in bgp_plan.problems(cluster_of(snap))]
    out += [f"node {s['node']}: session to BGPPeer {s['peer']} ({s['address']}) is {s['state']}"
            + (f" since {s['since']}" if s["since"] else "") for s in sessions(snap) if s["state"] != ESTABLISHED]
    return out


def _bgp(state: IPState, d: bgp_plan.BGPDecision, up: dict[tuple[str, str], str]) -> None:
    """Fold what BGP does for an IP into its state: served if a node advertises it on an Established
    session; when layer 2 does not serve the pool at all, BGP's reason is the IP's."""
    state.advertised_by = [{"node": p.node, "peer": p.peer, "prefix": p.route.prefix,
                            "communities": [*p.route.communities, *(f"large:{c}" for c in p.route.large_communities)],
                            "localPref": p.route.local_preference,
                            "session": up.get((p.node, p.peer), "unknown (no record)")} for p in d.paths]
    live = [a for a in state.advertised_by if a["session"] == ESTABLISHED]
    summary = ", ".join(f"{a['node']} to {a['peer']}" for a in live)
    if state.state == ANNOUNCED:
        if live:
            state.message += f"; advertised over BGP by {summary}"
        return
    if live:
        state.state, state.message = ADVERTISED, f"advertised over BGP by {summary}"
    elif state.state == plan.NO_ADVERTISEMENT:
        if d.paths:
            state.state = NO_SESSION
            state.message = "no session is Established on the nodes that should advertise it over BGP: " + ", ".join(
                f"{a['node']} to {a['peer']} ({a['session']})" for a in state.advertised_by)
        else:
            state.state, state.message = d.reason or state.state, f"{d.message}; and {state.message}"


def ip_states(snap: Snapshot, lb_class: str | None) -> tuple[dict[str, IPState], dict[str, list[dict]]]:
    """Every IP assigned to a Service of ours, and where it stands; and the recorded IPs no such Service holds."""
    cluster = cluster_of(snap)
    seen = agents_seen(snap)
    all_nodes = [n["metadata"]["name"] for n in snap.nodes]
    lost = links_lost(snap)
    with_seen = plan.decide_announcements(cluster, seen, lb_class, lost)
    with_all = plan.decide_announcements(cluster, all_nodes, lb_class, lost)
    recorded = records(snap)
    out: dict[str, IPState] = {}
    for ip, d in with_seen.items():
        d_all = with_all[ip]
        by = recorded.get(ip, [])
        expected = d.announcement.node if d.announcement else None
        if_all = d_all.announcement.node if d_all.announcement else None
        st = IPState(ip, d.services, d.pool, ANNOUNCED, "", by, expected, if_all)
        if len(by) == 1:
            st.message = f"announced by {_where(by[0])}" + (f" since {by[0]['since']}" if by[0]["since"] else "")
            if expected is not None and expected != by[0]["node"]:
                st.message += (f"; by the agents' rule {expected} should announce it: it is moving, or the record "
                               f"of {by[0]['node']} is stale (its agent crashed)")
        elif by:
            st.state = MULTIPLE
            st.message = (f"announced by {len(by)} nodes: {'; '.join(_where(r) for r in by)}. Normal for a moment "
                          "during a failover; lasting, it means the agents cannot hear each other's heartbeats "
                          "(a partition) or a crashed agent's record is stale")
        elif d_all.announcement is None:
            st.state, st.message = d_all.reason, d_all.message
        elif expected is not None:
            st.state = NOT_ANNOUNCED
            st.message = (f"node {expected} should announce it, but its L2NodeStatus does not list it: its agent "
                          "found no interface for it (see the Service's NotAnnounced events) or has not written "
                          "its record yet")
        else:
            st.state = plan.NO_NODE
            st.message = (f"no agent seen on a node that may announce it; node {if_all} would, once its agent runs "
                          f"(agents seen: {', '.join(seen) or 'none'})")
        out[ip] = st
    if bgp_configured(snap):
        up = {(s["node"], s["peer"]): s["state"] or "unknown" for s in sessions(snap)}
        for ip, routed in bgp_plan.decide_bgp(cluster, lb_class).items():
            _bgp(out[ip], routed, up)
    stray = {ip: by for ip, by in recorded.items() if ip not in with_seen}
    return out, stray


def stray_message(ip: str, by: list[dict]) -> str:
    nodes = ", ".join(r["node"] for r in by)
    return (f"{ip} is announced by {nodes} (L2NodeStatus) but held by no LoadBalancer Service of ours: the record "
            "is stale (a crashed agent) or the Service was just deleted")
