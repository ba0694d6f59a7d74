"""`leifurctl explain NAMESPACE/SERVICE`: why a Service has no IP, or why its IP is not announced.

Three sources, shown side by side: the controller's own words (the condition leifur.io/IPAllocated
and the Events), the controller's decision code run now on the cluster's objects
(`allocation.allocate` on an allocator rebuilt from Services' status), and the agents' decision code
(`announce.plan.decide_announcements`) with the agents' records (L2NodeStatus).
"""

from __future__ import annotations

import difflib

from leifur.cli import analysis, output
from leifur.cli.snapshot import CtlError, Snapshot
from leifur.controller import allocation
from leifur.controller.reconcile import address_conflict
from leifur.ipam.allocator import AllocationError
from leifur.ipam.pool import Pool
from leifur.ipam.selectors import candidate_pools
from leifur.model import annotations as ann
from leifur.model import names, service
from leifur.model.objects import key_of

NOT_OURS = "NotOurs"
PARTIAL = "PartiallyAllocated"


def _not_ours(svc: dict, lb_class: str | None) -> tuple[str, str] | None:
    """(reason, message) when the controller does not give this Service an IP, else None."""
    spec, meta = svc.get("spec") or {}, svc["metadata"]
    if meta.get("deletionTimestamp"):
        if names.SERVICE_FINALIZER in (meta.get("finalizers") or []):
            return analysis.DELETING, (f"being deleted: the controller releases its IPs, then removes its finalizer "
                                       f"{names.SERVICE_FINALIZER} (if this lasts, is leifur-controller running?)")
        return analysis.DELETING, "being deleted; Leifur holds nothing for it any more"
    if spec.get("type") != "LoadBalancer":
        return NOT_OURS, f"type is {spec.get('type') or 'ClusterIP'}: Leifur gives IPs to type LoadBalancer only"
    cls = spec.get("loadBalancerClass")
    if cls != lb_class:
        if lb_class is None:
            return NOT_OURS, (f"spec.loadBalancerClass is {cls!r}: a controller started without "
                              "--load-balancer-class handles only Services without a class (if yours runs with "
                              f"--load-balancer-class {cls}, pass the same flag here)")
        return NOT_OURS, (f"spec.loadBalancerClass is {cls!r}, not {lb_class!r}: a controller with "
                          f"--load-balancer-class {lb_class} handles that class only")
    return None


def _request(req: service.ServiceRequest, svc: dict) -> dict:
    spec = svc.get("spec") or {}
    source = None
    if req.requested:
        source = ("spec.loadBalancerIP" if spec.get("loadBalancerIP")
                  else ann.read(svc["metadata"].get("annotations"), names.ANN_LOAD_BALANCER_IPS).source)
    return {"families": [f"IPv{v}" for v in req.families], "ipFamilyPolicy": req.policy,
            "requestedIPs": [str(ip) for _, ip in sorted(req.requested.items())], "requestedIPsFrom": source,
            "pool": req.pool, "poolFrom": req.pool_from if req.pool else None, "sharingKey": req.traits.sharing_key,
            "externalTrafficPolicy": req.traits.traffic_policy}


def _pool_hints(snap: Snapshot, rb: analysis.Rebuilt, req: service.ServiceRequest, candidates: list[Pool],
                ns_labels: dict[str, str]) -> list[str]:
    """What leifurctl sees about the pools that the controller's message may not say."""
    parsed = rb.state.parsed
    deleting = {o["metadata"]["name"] for o in snap.pools if o["metadata"].get("deletionTimestamp")}
    hints = []
    if req.pool is not None:
        if req.pool not in parsed:
            close = difflib.get_close_matches(req.pool, list(parsed), n=1)
            hints.append(f"the annotation {req.pool_from} names pool {req.pool!r}, which does not exist"
                         + (f"; did you mean {close[0]!r}?" if close else "")
                         + f" (pools: {', '.join(sorted(parsed)) or 'none'})")
        elif not isinstance(parsed[req.pool], Pool):
            hints.append(f"pool {req.pool} (named by {req.pool_from}) is invalid: {parsed[req.pool]}")
        elif req.pool in deleting:
            hints.append(f"pool {req.pool} (named by {req.pool_from}) is being deleted: no new IPs come "
                         "from it")
        return hints
    if candidates:
        return hints
    if not parsed:
        return ["there is no IPAddressPool in the cluster"]
    why = []
    for name, p in sorted(parsed.items()):
        if not isinstance(p, Pool):
            why.append(f"{name} is invalid")
        elif name in deleting:
            why.append(f"{name} is being deleted")
        elif not p.auto_assign:
            why.append(f"{name} has autoAssign: false (only Services naming it in {names.ANN_ADDRESS_POOL} get "
                       "from it)")
        elif p.allocation is not None and not p.allocation.selects(req.namespace, ns_labels, req.labels):
            why.append(f"{name}'s serviceAllocation does not select this Service (namespace {req.namespace}, "
                       f"namespace labels {ns_labels or '{}'}, Service labels {req.labels or '{}'})")
    hints.append("no pool may serve this Service: " + "; ".join(why))
    return hints


def _allocation(snap: Snapshot, rb: analysis.Rebuilt, svc: dict) -> tuple[dict, dict | None]:
    """The allocation part of the report, and the request as read (None if it cannot be read)."""
    cond = analysis.condition(svc)
    meta = svc["metadata"]
    ips = [str(ip) for ip in service.ingress_ips(svc)]
    ns_labels = snap.namespace_labels(meta["namespace"])
    out: dict = {"ok": True, "state": allocation.REASON_ALLOCATED, "message": "", "controller": None, "now": None,
                 "candidatePools": [], "hints": []}
    if cond is not None:
        out["controller"] = {k: cond.get(k) for k in ("status", "reason", "message", "lastTransitionTime",
                                                      "observedGeneration")}
        gen, seen = meta.get("generation"), cond.get("observedGeneration")
        out["controller"]["current"] = gen is None or seen is None or seen >= gen
    request = None
    try:
        req = service.parse(svc)
    except service.ServiceSpecError as e:
        now = {"ok": False, "reason": e.reason, "message": str(e), "ips": []}
    else:
        request = _request(req, svc)
        candidates = candidate_pools(rb.state.allocator.pools.values(), req.namespace, ns_labels, req.labels, req.pool)
        out["candidatePools"] = [p.name for p in candidates]
        out["hints"] = _pool_hints(snap, rb, req, candidates, ns_labels)
        try:
            outcome = allocation.allocate(rb.state.allocator, req, ns_labels)
        except AllocationError as e:  # not expected: allocate reports failures in its Outcome
            now = {"ok": False, "reason": e.reason, "message": e.message, "ips": []}
        else:
            now = {"ok": outcome.ok, "reason": outcome.reason, "message": outcome.message,
                   "ips": [{"ip": str(ip), "pool": p} for ip, p in outcome.ips]}
    out["now"] = now
    would = (f"deciding now with the controller's code, it would be {now['message']}" if now["ok"]
             else f"deciding now with the controller's code: {now['reason']}: {now['message']}")
    if not ips:
        out["ok"] = False
        if cond is not None and cond.get("status") == "False":
            out["state"], out["message"] = cond.get("reason") or "Unknown", cond.get("message") or ""
            if now["ok"]:
                out["message"] += (f" — but {would}: the controller has not caught up (is leifur-controller "
                                   "running and leading?)")
        elif now["ok"]:
            out["state"] = analysis.PENDING
            out["message"] = (f"no IP and no word from the controller yet (is leifur-controller running?); {would}"
                              if cond is None else f"no IP yet; {would}")
        else:
            out["state"], out["message"] = now["reason"], now["message"]
            if cond is None:
                out["message"] += " (the controller has not written its condition yet: is it running?)"
    elif cond is not None and (cond.get("status") != "True" or cond.get("reason") == PARTIAL):
        out["ok"] = False
        out["state"], out["message"] = cond.get("reason") or "Unknown", cond.get("message") or ""
        if cond.get("status") != "True":
            out["message"] += f" (it keeps {', '.join(ips)})"
    else:
        out["message"] = (cond or {}).get("message") or now["message"]
    return out, request


def _events(snap: Snapshot, svc: dict) -> list[dict]:
    uid = svc["metadata"].get("uid")
    out = []
    for e in snap.events:
        involved = e.get("involvedObject") or {}
        if uid and involved.get("uid") and involved["uid"] != uid:
            continue  # about an earlier Service of the same name
        last = e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp")
        out.append({"type": e.get("type"), "reason": e.get("reason"), "message": e.get("message"),
                    "count": e.get("count") or 1, "lastTimestamp": last,
                    "from": (e.get("source") or {}).get("component") or e.get("reportingComponent") or None})
    out.sort(key=lambda e: e["lastTimestamp"] or "")
    return out


def report(snap: Snapshot, namespace: str, name: str, lb_class: str | None) -> dict:
    svc = snap.service(namespace, name)
    if svc is None:
        raise CtlError(f"Service {namespace}/{name} not found")
    key = key_of(svc)
    spec = svc.get("spec") or {}
    ips = [str(ip) for ip in service.ingress_ips(svc)]
    rep: dict = {"service": key, "verdict": None, "type": spec.get("type"),
                 "loadBalancerClass": spec.get("loadBalancerClass"), "ours": False, "ips": ips,
                 "pools": [p for p in ((svc["metadata"].get("annotations") or {})
                                       .get(names.ANN_ALLOCATED_FROM_POOL) or "").split(",") if p],
                 "request": None, "allocation": None, "announcements": [], "conflicts": _conflicts(snap, key, ips),
                 "agentsSeen": analysis.agents_seen(snap), "events": _events(snap, svc), "notes": list(snap.notes)}
    not_ours = _not_ours(svc, lb_class)
    if not_ours is not None:
        reason, message = not_ours
        rep["verdict"] = {"ok": False, "reason": reason, "message": message}
        return rep
    rep["ours"] = True
    rb = analysis.rebuild(snap, lb_class)
    rep["notes"].extend(message for younger, holders, message in rb.conflicts if key == younger or key in holders)
    states, _ = analysis.ip_states(snap, lb_class)
    rep["announcements"] = [states[ip].as_dict() if ip in states else
                            {"ip": ip, "state": None, "message": "not considered by the agents"} for ip in ips]
    allocation, request = _allocation(snap, rb, svc)
    rep["request"], rep["allocation"] = request, allocation
    conflict = address_conflict(key, ips, snap.node_statuses)
    if not allocation["ok"]:
        verdict = {"ok": False, "reason": allocation["state"], "message": allocation["message"]}
    elif conflict is not None:
        # A host outside the cluster uses the IP: that is what to fix, whatever the agents decide.
        verdict = {"ok": False, "reason": conflict[0], "message": conflict[1]}
    else:
        bad = [a for a in rep["announcements"] if a["state"] not in analysis.SERVED]
        if bad:
            verdict = {"ok": False, "reason": bad[0]["state"], "message": f"{bad[0]['ip']} — {bad[0]['message']}"}
        else:
            on_lan = all(a["state"] == analysis.ANNOUNCED for a in rep["announcements"])
            verdict = {"ok": True, "reason": analysis.ANNOUNCED if on_lan else analysis.ADVERTISED,
                       "message": "; ".join(f"{a['ip']} {a['message']}" for a in rep["announcements"])}
    rep["verdict"] = verdict
    return rep


def _conflicts(snap: Snapshot, key: str, ips: list[str]) -> list[dict]:
    """The address conflicts the agents' records list for this Service's IPs (agent/conflicts.py)."""
    out = []
    for r in sorted(snap.node_statuses, key=lambda o: o["metadata"]["name"]):
        for c in (r.get("status") or {}).get("conflicts") or []:
            if isinstance(c, dict) and c.get("ip") in ips and (not c.get("services") or key in c["services"]):
                out.append({"node": r["metadata"]["name"], **{k: c.get(k) for k in ("ip", "mac", "interface",
                                                                                      "kind", "since")}})
    return out


# -- the readable form --------------------------------------------------------------------------


def _kv(rows: list[tuple[str, str | list[str]]]) -> str:
    width = max(len(k) for k, _ in rows) + 2
    lines = []
    for k, v in rows:
        values = v if isinstance(v, list) else [v]
        for i, line in enumerate(values or [output.NONE]):
            lines.append(f"{(k + ':') if i == 0 else '':<{width}}{line}")
    return "\n".join(lines)


def _request_text(req: dict) -> str:
    parts = [f"{'/'.join(req['families'])} ({req['ipFamilyPolicy']})"]
    if req["requestedIPs"]:
        parts.append(f"IPs {', '.join(req['requestedIPs'])} (from {req['requestedIPsFrom']})")
    if req["pool"]:
        parts.append(f"pool {req['pool']} (from {req['poolFrom']})")
    if req["sharingKey"]:
        parts.append(f"sharing key {req['sharingKey']!r}")
    if req["externalTrafficPolicy"] != "Cluster":
        parts.append(f"externalTrafficPolicy {req['externalTrafficPolicy']}")
    return "; ".join(parts)


def _allocation_lines(alloc: dict) -> list[str]:
    lines = []
    c = alloc["controller"]
    if c is None:
        lines.append(f"controller: no {names.COND_SERVICE_ALLOCATED} condition yet")
    else:
        stale = "" if c["current"] else " (written for an earlier generation: the latest change is not handled yet)"
        lines.append(f"controller ({names.COND_SERVICE_ALLOCATED}, {output.age(c['lastTransitionTime'])} ago): "
                     f"{c['status']}, {c['reason']}: {c['message']}{stale}")
    now = alloc["now"]
    if now is not None:
        same = c is not None and c["reason"] == now["reason"] and c["message"] == now["message"]
        lines.append("deciding now with the controller's code: " + (
            "the same" if same else f"{'ok' if now['ok'] else 'fails'}, {now['reason']}: {now['message']}"))
    return lines


def render(rep: dict) -> str:
    v = rep["verdict"]
    rows: list[tuple[str, str | list[str]]] = [
        ("Service", rep["service"]),
        ("Verdict", f"{v['reason']}: {v['message']}"),
    ]
    if not rep["ours"]:
        rows.append(("Type", f"{rep['type']}, loadBalancerClass {rep['loadBalancerClass'] or 'unset'}"))
        rows.append(("IPs", ", ".join(rep["ips"]) or "<none>"))
    else:
        alloc = rep["allocation"]
        if rep["request"] is not None:
            rows.append(("Request", _request_text(rep["request"])))
            rows.append(("Pools to try", ", ".join(alloc["candidatePools"]) or "none"))
        rows.append(("IPs", ", ".join(f"{ip}" for ip in rep["ips"]) + (f" (pool {', '.join(rep['pools'])})"
                                                                      if rep["pools"] else "") or "<none>"))
        rows.append(("Allocation", _allocation_lines(alloc)))
        if alloc["hints"]:
            rows.append(("Hints", alloc["hints"]))
    seen = rep["agentsSeen"]
    rows.append(("Agents seen", f"{', '.join(seen) if seen else 'none'} (nodes with an L2NodeStatus record; "
                                "the agents' heartbeats are not in the API)"))
    if rep.get("conflicts"):
        rows.append(("Conflicts", [f"{c['ip']}: {c['kind']} by {c['mac']} (host outside the cluster), seen by "
                                   f"{c['node']} on {c['interface'] or '?'} since {c['since']}"
                                   for c in rep["conflicts"]]))
    if rep["notes"]:
        rows.append(("Notes", rep["notes"]))
    out = [_kv(rows)]
    if rep["ours"]:
        out.append("")
        if rep["announcements"]:
            out.append("Announcement:")
            out.append(output.table(
                ("IP", "POOL", "NODE", "STATE", "MESSAGE"),
                [(a["ip"], a.get("pool"), "+".join(r["node"] for r in a.get("announcedBy") or []) or None,
                  a["state"], a["message"]) for a in rep["announcements"]]))
        else:
            out.append("Announcement: no IP to announce")
        routed = [(a["ip"], r) for a in rep["announcements"] for r in a.get("advertisedBy") or []]
        if routed:
            out.append("")
            out.append("BGP:")
            out.append(output.table(
                ("IP", "NODE", "PEER", "PREFIX", "COMMUNITIES", "LOCALPREF", "SESSION"),
                [(ip, r["node"], r["peer"], r["prefix"], ",".join(r["communities"]) or None, r["localPref"],
                  r["session"]) for ip, r in routed]))
    out.append("")
    if rep["events"]:
        out.append("Events:")
        out.append(output.table(("LAST SEEN", "TYPE", "REASON", "FROM", "COUNT", "MESSAGE"),
                                [(output.age(e["lastTimestamp"]), e["type"], e["reason"], e["from"], e["count"],
                                  e["message"]) for e in rep["events"][-10:]]))
    else:
        out.append("Events: none")
    return "\n".join(out)
