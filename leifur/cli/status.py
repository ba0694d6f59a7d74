"""`leifurctl status`: every pool with its usage per family, every Service of ours with its IPs, pool
and announcing node; what has a problem comes first."""

from __future__ import annotations

from leifur.cli import analysis, output
from leifur.cli.snapshot import Snapshot
from leifur.ipam.pool import Pool
from leifur.model import names, service
from leifur.model.objects import key_of


def _problem(reason: str, message: str) -> dict:
    return {"reason": reason, "message": message}


def _pool_row(obj: dict, rb: analysis.Rebuilt) -> dict:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    name = meta["name"]
    parsed = rb.state.parsed.get(name)
    problems: list[dict] = []
    families: dict[str, dict] = {}
    if meta.get("deletionTimestamp"):
        users = sorted(rb.state.holders_in(parsed)) if isinstance(parsed, Pool) else []
        problems.append(_problem("Deleting", "being deleted; " + (
            f"waits for {len(users)} Service(s) to let go: {', '.join(users[:5])}{' …' if len(users) > 5 else ''}"
            if users else "no Service holds its addresses")))
    if isinstance(parsed, Pool):
        for version, (total, used) in analysis.pool_usage(rb.state, parsed).items():
            family = f"IPv{version}"
            families[family] = {"total": output.json_count(total), "inUse": used,
                                "available": output.json_count(max(total - used, 0))}
            if total == 0:
                problems.append(_problem("Empty", f"no usable {family} address (avoidBuggyIPs excludes them all)"))
            elif used >= total:
                problems.append(_problem("Exhausted", f"all {total} {family} addresses are in use"))
        others = rb.state.overlaps.get(name)
        if others:
            problems.append(_problem("Overlapping", f"shares addresses with {', '.join(others)}"))
    elif parsed is not None:
        problems.append(_problem("Invalid", "; ".join(parsed.problems)))
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == names.COND_POOL_SERVICES_OUTSIDE and c.get("status") == "True":
            problems.append(_problem(names.COND_POOL_SERVICES_OUTSIDE, c.get("message") or ""))
    auto = spec.get("autoAssign")
    return {"name": name, "addresses": list(spec.get("addresses") or []),
            "autoAssign": True if auto is None else auto, "families": families,
            "state": problems[0]["reason"] if problems else "OK", "problems": problems}


def service_problems(svc: dict, states: dict[str, analysis.IPState]) -> list[dict]:
    """The allocation problem (the controller's condition) first, then each IP not announced."""
    problems: list[dict] = []
    ips = [str(ip) for ip in service.ingress_ips(svc)]
    cond = analysis.condition(svc)
    if svc["metadata"].get("deletionTimestamp"):
        problems.append(_problem(analysis.DELETING, "being deleted; the controller releases its IPs, then removes "
                                                    f"its finalizer {names.SERVICE_FINALIZER}"))
        return problems
    if cond is None:
        if not ips:
            problems.append(_problem(analysis.PENDING, "no IP and no word from the controller yet: is "
                                                       "leifur-controller running?"))
    elif cond.get("status") != "True" or cond.get("reason") == "PartiallyAllocated":
        problems.append(_problem(cond.get("reason") or "Unknown", cond.get("message") or ""))
    for ip in ips:
        st = states.get(ip)
        if st is not None and st.state not in analysis.SERVED:
            problems.append(_problem(st.state, f"{ip} — {st.message}"))
    return problems


def _listed(svc: dict, lb_class: str | None) -> bool:
    meta = svc["metadata"]
    return service.is_ours(svc, lb_class) or (
        bool(meta.get("deletionTimestamp")) and names.SERVICE_FINALIZER in (meta.get("finalizers") or []))


def _service_row(svc: dict, states: dict[str, analysis.IPState]) -> dict:
    meta = svc["metadata"]
    ips = [str(ip) for ip in service.ingress_ips(svc)]
    pools = (meta.get("annotations") or {}).get(names.ANN_ALLOCATED_FROM_POOL)
    problems = service_problems(svc, states)
    announcements = []
    for ip in ips:
        st = states.get(ip)
        nodes = ([r["node"] for r in st.announced_by] + sorted({a["node"] for a in st.advertised_by
                                                               if a["session"] == analysis.ESTABLISHED})) if st else []
        announcements.append({"ip": ip, "nodes": nodes,
                              "state": st.state if st else None, "message": st.message if st else ""})
    return {"service": key_of(svc), "namespace": meta["namespace"], "name": meta["name"], "ips": ips,
            "pools": pools.split(",") if pools else sorted({s.pool for ip in ips if (s := states.get(ip)) and s.pool}),
            "announcements": announcements, "condition": analysis.condition(svc),
            "state": problems[0]["reason"] if problems else "OK", "problems": problems}


def _severity(row: dict) -> int:
    """0: no IP (or being deleted), 1: an IP but a problem (not announced, partly allocated), 2: fine."""
    if not row["problems"]:
        return 2
    return 0 if not row["ips"] or row["state"] == analysis.DELETING else 1


def report(snap: Snapshot, lb_class: str | None, namespace: str | None = None) -> dict:
    rb = analysis.rebuild(snap, lb_class)
    states, stray = analysis.ip_states(snap, lb_class)
    pools = sorted((_pool_row(o, rb) for o in snap.pools), key=lambda p: (not p["problems"], p["name"]))
    services = sorted((_service_row(s, states) for s in snap.services
                       if _listed(s, lb_class) and (namespace is None or s["metadata"]["namespace"] == namespace)),
                      key=lambda s: (_severity(s), s["service"]))
    return {
        "loadBalancerClass": lb_class,
        "namespace": namespace,
        "pools": pools,
        "services": services,
        "strayAnnouncements": [{"ip": ip, "nodes": [r["node"] for r in by], "message": analysis.stray_message(ip, by)}
                               for ip, by in sorted(stray.items())],
        "conflicts": [message for _, _, message in rb.conflicts],
        # BGP: problems (sessions down, objects wrong) first, then every session.
        "bgpProblems": analysis.session_problems(snap),
        "sessions": sorted(analysis.sessions(snap), key=lambda s: (s["state"] == analysis.ESTABLISHED,
                                                                   s["node"], s["peer"])),
        "agentsSeen": analysis.agents_seen(snap),
        "notes": snap.notes,
    }


def exit_code(rep: dict) -> int:
    """EXIT_PROBLEMS if the report lists any (a pool or Service not OK, a stray announcement, a
    conflict), else EXIT_OK: scripts and probes can tell without parsing the output. Notes (what
    could not be read) are not problems of the cluster."""
    listed = (any(row["problems"] for row in (*rep["pools"], *rep["services"]))
              or rep["strayAnnouncements"] or rep["conflicts"] or rep["bgpProblems"])
    return output.EXIT_PROBLEMS if listed else output.EXIT_OK


def _usage(row: dict, family: str) -> str:
    f = row["families"].get(family)
    if f is None:
        return output.NONE
    return f"{f['inUse']}/{output.count(int(f['total']))}"


def _addresses(entries: list[str]) -> str:
    return ",".join(entries[:3]) + (f" (+{len(entries) - 3})" if len(entries) > 3 else "")


def _first_message(row: dict, more_hint: str) -> str:
    problems = row["problems"]
    if not problems:
        return ""
    more = len(problems) - 1
    return problems[0]["message"] + (f" (and {more} more{more_hint})" if more else "")


def render(rep: dict) -> str:
    out: list[str] = []
    if rep["bgpProblems"] or rep["sessions"]:
        out.extend(f"problem: {p}" for p in rep["bgpProblems"])
        if rep["sessions"]:
            out.append(output.table(
                ("NODE", "PEER", "ADDRESS", "SESSION", "SINCE", "PREFIXES", "BFD"),
                [(s["node"], s["peer"], s["address"], s["state"], s["since"], s["prefixesAdvertised"], s["bfd"])
                 for s in rep["sessions"]]))
        out.append("")
    if rep["pools"]:
        out.append(output.table(
            ("POOL", "ADDRESSES", "IPV4 USED/TOTAL", "IPV6 USED/TOTAL", "AUTO", "STATE", "MESSAGE"),
            [(p["name"], _addresses(p["addresses"]), _usage(p, "IPv4"), _usage(p, "IPv6"),
              "yes" if p["autoAssign"] else "no", p["state"], "; ".join(x["message"] for x in p["problems"]))
             for p in rep["pools"]]))
    else:
        out.append("No IPAddressPool: no Service can get an IP. Create one (leifurctl validate checks it first).")
    out.append("")
    if rep["services"]:
        rows = []
        for s in rep["services"]:
            nodes = ",".join("+".join(a["nodes"]) or output.NONE for a in s["announcements"])
            rows.append((s["service"], ",".join(s["ips"]) or "<pending>", ",".join(s["pools"]), nodes, s["state"],
                         _first_message(s, f": leifurctl explain {s['service']}")))
        out.append(output.table(("SERVICE", "IPS", "POOL", "NODE", "STATE", "MESSAGE"), rows))
    else:
        where = f" in namespace {rep['namespace']}" if rep["namespace"] else ""
        cls = f" of class {rep['loadBalancerClass']}" if rep["loadBalancerClass"] else " without a loadBalancerClass"
        out.append(f"No LoadBalancer Service{cls}{where}.")
    for stray in rep["strayAnnouncements"]:
        out.append(f"warning: {stray['message']}")
    for conflict in rep["conflicts"]:
        out.append(f"warning: {conflict}")
    out.append("")
    seen = rep["agentsSeen"]
    out.append(f"Agents seen: {', '.join(seen) if seen else 'none'} (nodes with an L2NodeStatus record)")
    for note in rep["notes"]:
        out.append(f"note: {note}")
    return "\n".join(out)
