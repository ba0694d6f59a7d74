"""Conditions and Events on BGPPeers, BGPAdvertisements and BFDProfiles: what is wrong with them,
and whether the nodes' sessions are up.

The agents report their own sessions in their records; the controller, as the one writer, sums
them up on each BGPPeer so that `kubectl get bgppeer -o yaml` and `kubectl describe` tell the
operator without leifurctl. `wanted` is pure; `BGPStatusReconciler` applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from leifur.announce import bgp_plan, plan
from leifur.controller import metrics
from leifur.controller.reconcile import Lister, Recorder
from leifur.controller.writes import condition, same_conditions
from leifur.model import names

ESTABLISHED = "Established"
KINDS = {names.BGP_PEER: names.BGPPEERS, names.BGP_ADVERTISEMENT: names.BGPADVERTISEMENTS,
         names.BFD_PROFILE: names.BFDPROFILES}


@dataclass(frozen=True)
class Want:
    """One condition an object should show."""

    type: str
    ok: bool  # the good state: Valid True, Established True, Overlapping False
    status: bool
    reason: str
    message: str


def record_sessions(records: Iterable[dict]) -> list[tuple[str, dict]]:
    """(node, session) for every BGP session the nodes' records list, by node name (leifurctl reads
    them the same way)."""
    return [(r["metadata"]["name"], s) for r in sorted(records, key=lambda o: o["metadata"]["name"])
            for s in ((r.get("status") or {}).get("bgp") or {}).get("sessions") or []
            if isinstance(s, dict) and s.get("peer")]


def _sessions_by_peer(records: Iterable[dict]) -> dict[str, list[tuple[str, dict]]]:
    out: dict[str, list[tuple[str, dict]]] = {}
    for node, s in record_sessions(records):
        out.setdefault(str(s["peer"]), []).append((node, s))
    return out


def wanted(cluster: plan.Cluster, records: Iterable[dict]) -> dict[tuple[str, str], list[Want]]:
    """(kind, name) -> the conditions of every BGP object in `cluster` (the controller gives it no
    Nodes: what a peer cannot do on a node is that node's agent's to report, in its record)."""
    problems: dict[tuple[str, str], list[str]] = {}
    for p in bgp_plan.problems(cluster):
        problems.setdefault((p.kind, p.name), []).append(p.message)
    overlapping = bgp_plan.overlaps(cluster)
    sessions = _sessions_by_peer(records)
    out: dict[tuple[str, str], list[Want]] = {}
    for kind, objs in ((names.BGP_PEER, cluster.peers), (names.BGP_ADVERTISEMENT, cluster.bgp_advertisements),
                       (names.BFD_PROFILE, cluster.bfd_profiles)):
        for obj in objs:
            name = obj["metadata"]["name"]
            wrong = problems.get((kind, name), [])
            conds = [Want(names.COND_VALID, True, not wrong, "InvalidSpec" if wrong else "Valid",
                          "; ".join(wrong) or "the spec is usable")]
            if kind == names.BGP_PEER:
                conds.append(_established(sessions.get(name, [])))
            if kind == names.BGP_ADVERTISEMENT:
                message = overlapping.get(name)
                conds.append(Want(names.COND_OVERLAPPING, False, bool(message),
                                  "Overlap" if message else "NoOverlap",
                                  message or "no other BGPAdvertisement gives its routes other attributes"))
            out[(kind, name)] = conds
    return out


def _established(sessions: list[tuple[str, dict]]) -> Want:
    if not sessions:
        return Want(ESTABLISHED, True, False, "NoSessions",
                    "no node's record lists a session with this peer: no node it selects runs an agent in BGP mode")
    down = [(node, s) for node, s in sessions if s.get("state") != ESTABLISHED]
    if not down:
        return Want(ESTABLISHED, True, True, ESTABLISHED, f"established from {len(sessions)} node(s)")
    listed = "; ".join(f"node {node}: {s.get('state')}" + (f" since {s['since']}" if s.get("since") else "")
                       + (f" ({s['message']})" if s.get("message") else "") for node, s in down)
    return Want(ESTABLISHED, True, False, "SessionsDown",
                f"{len(down)} of {len(sessions)} node(s) without an Established session: {listed}")


class BGPStatusReconciler:
    """Keys are "Kind/name". Every sync computes every object's conditions (they depend on each
    other: a peer's name in an advertisement, a profile named by a peer) and writes its own."""

    def __init__(self, listers: Mapping[str, Lister], pools: Lister, records: Lister,
                 patch_status: Callable[[str, dict, dict], dict], recorder: Recorder) -> None:
        self.listers = listers
        self.pools = pools
        self.records = records
        self.patch_status = patch_status
        self.recorder = recorder

    def sync(self, key: str) -> None:
        with metrics.RECONCILE_DURATION.labels("bgp").time():
            self._sync(key)

    def _sync(self, key: str) -> None:
        kind, _, name = key.partition("/")
        lister = self.listers.get(kind)
        obj = lister.get(name) if lister is not None else None
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        cluster = plan.Cluster(pools=self.pools.objects(), peers=self.listers[names.BGP_PEER].objects(),
                               bgp_advertisements=self.listers[names.BGP_ADVERTISEMENT].objects(),
                               bfd_profiles=self.listers[names.BFD_PROFILE].objects())
        wants = wanted(cluster, self.records.objects()).get((kind, name), [])
        old = (obj.get("status") or {}).get("conditions")
        gen = obj["metadata"].get("generation")
        conds = old
        for w in wants:
            conds = condition(conds, w.type, w.status, w.reason, w.message, gen)
        if same_conditions(old, conds):
            return
        previous = {c.get("type"): c for c in old or []}
        for w in wants:
            was = previous.get(w.type) or {}
            if (w.status != w.ok) and (was.get("status") != ("True" if w.status else "False")
                                       or was.get("message") != w.message):
                self.recorder.event(obj, "Warning", w.reason, w.message)
        self.patch_status(KINDS[kind], obj, {"observedGeneration": gen, "conditions": conds})
