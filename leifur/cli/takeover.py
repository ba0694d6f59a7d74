"""`leifurctl migrate check`: what Leifur would do to the cluster's Services if its controller and
agents took over now — which keep their IPs, which would not and why, and which node would
announce each IP. Pure: decides from a Snapshot with the controller's and the agents' own code.

The controller's start is replayed (every IP the Services of our class show is loaded first, as
`reconcile.State.adopt_all` does), then each Service's sync (`allocation.allocate`); the agents'
election (`plan.decide_announcements`) is run on the Services as the controller would leave them,
as if every Node ran an agent.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from leifur.announce import plan
from leifur.cli import analysis, output
from leifur.cli.snapshot import Snapshot
from leifur.controller import allocation
from leifur.model import names, service
from leifur.model.objects import key_of

KEEPS = "Keeps"  # shows the same IPs, from a pool, without a problem
NEW = "New"  # shows nothing yet: would get its IPs
CHANGES = "Changes"  # would show other IPs (the user asked: a requested IP, a pool named)
REPORTED = "Reported"  # keeps what it shows, but with a problem the controller reports (Taken, NotInPool, ...)
# Announcement states that are not a problem for a cutover: MetalLB does not announce those either.
_QUIET = (plan.NO_ENDPOINTS,)


@dataclass
class Verdict:
    key: str
    now: list[str]
    after: list[str]
    pools: list[str]
    state: str
    message: str
    nodes: dict[str, str]  # IP -> the node that would announce it, or why none would

    @property
    def problem(self) -> bool:
        return self.state in (CHANGES, REPORTED) or any(n.startswith("!") for n in self.nodes.values())

    def as_dict(self) -> dict:
        return {"service": self.key, "now": self.now, "after": self.after, "pools": self.pools,
                "state": self.state, "message": self.message,
                "announcedBy": {ip: n.lstrip("!") for ip, n in self.nodes.items()}, "problem": self.problem}


def _state(now: list[str], out: allocation.Outcome) -> str:
    after = [str(ip) for ip in out.shown]
    if not now:
        return NEW
    if sorted(after) != sorted(now):
        return CHANGES
    return KEEPS if out.ok and out.reason == allocation.REASON_ALLOCATED else REPORTED


def check(snap: Snapshot, lb_class: str | None) -> list[Verdict]:
    """One verdict per Service of our class, oldest first (the order the controller adopts them)."""
    rb = analysis.rebuild(snap, lb_class)
    ours = sorted((s for s in snap.services if service.is_ours(s, lb_class)),
                  key=lambda s: (s["metadata"].get("creationTimestamp", ""), key_of(s)))
    verdicts: list[Verdict] = []
    taken_over: list[dict] = []
    for svc in ours:
        now = [str(ip) for ip in service.ingress_ips(svc)]
        try:
            req = service.parse(svc)
        except service.ServiceSpecError as e:
            verdicts.append(Verdict(key_of(svc), now, now, [], REPORTED, f"{e.reason}: {e}", {}))
            taken_over.append(svc)
            continue
        out = allocation.allocate(rb.state.allocator, req, snap.namespace_labels(req.namespace))
        verdicts.append(Verdict(key_of(svc), now, [str(ip) for ip in out.shown], out.pools, _state(now, out),
                                out.message if out.ok else f"{out.reason}: {out.message}", {}))
        # The Service as the controller would leave it: its IPs, and the pools it names.
        after = copy.deepcopy(svc)
        after["metadata"].setdefault("annotations", {})[names.ANN_ALLOCATED_FROM_POOL] = ",".join(out.pools)
        after["status"] = {"loadBalancer": {"ingress": [{"ip": str(ip)} for ip in out.shown]}}
        taken_over.append(after)
    others = [s for s in snap.services if not service.is_ours(s, lb_class)]
    cluster = plan.Cluster(others + taken_over, snap.endpoint_slices, snap.nodes, snap.pools, snap.advertisements)
    nodes = [n["metadata"]["name"] for n in snap.nodes]
    decisions = plan.decide_announcements(cluster, nodes, lb_class, analysis.links_lost(snap))
    for v in verdicts:
        for ip in v.after:
            d = decisions.get(ip)
            if d is None:
                continue
            if d.announcement is not None:
                v.nodes[ip] = d.announcement.node
            else:
                v.nodes[ip] = ("" if d.reason in _QUIET else "!") + f"{d.reason}: {d.message}"
    return verdicts


def with_planned(snap: Snapshot, planned: list[dict]) -> Snapshot:
    """The snapshot with Leifur objects not applied yet: a planned pool or advertisement replaces
    the cluster's of the same name, or is added."""
    def merged(current: list[dict], kind: str) -> list[dict]:
        mine = {o["metadata"]["name"]: o for o in planned if o.get("kind") == kind}
        return [o for o in current if o["metadata"]["name"] not in mine] + list(mine.values())

    return dataclasses.replace(snap, pools=merged(snap.pools, "IPAddressPool"),
                               advertisements=merged(snap.advertisements, "L2Advertisement"))


def report(snap: Snapshot, lb_class: str | None) -> dict:
    verdicts = check(snap, lb_class)
    return {"services": [v.as_dict() for v in verdicts], "notes": list(snap.notes),
            "ok": not any(v.problem for v in verdicts)}


def render(rep: dict) -> str:
    rows = []
    for s in sorted(rep["services"], key=lambda s: (not s["problem"], s["service"])):
        nodes = "; ".join(f"{ip}: {n}" for ip, n in s["announcedBy"].items())
        why = s["message"] if s["state"] != KEEPS else ""
        rows.append([s["service"], ",".join(s["now"]), ",".join(s["after"]), s["state"], nodes, why])
    lines = [output.table(["SERVICE", "NOW", "AFTER", "STATE", "ANNOUNCED BY", "WHY"], rows)]
    lines += [f"note: {n}" for n in rep["notes"]]
    n = len(rep["services"])
    bad = sum(s["problem"] for s in rep["services"])
    lines.append(f"{n - bad} of {n} Services would keep their IPs and be announced" if bad
                 else f"all {n} Services would keep their IPs and be announced (or, without ready endpoints, "
                      "stay unannounced as now)")
    return "\n".join(lines)
