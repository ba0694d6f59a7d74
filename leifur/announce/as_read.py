"""What an agent's caches keep of Services, EndpointSlices and the nodes' records: the parts the
plans read (plan.py, bgp_plan.py, and the agent's Events and probes), with parts that are the
same in many objects shared.

An agent caches every Service and EndpointSlice of the cluster and reads little of each; at 5,000
Services the whole objects were most of its memory. Most Services have the same spec fields here
(type, class, traffic policy) and most endpoints read the same (a node, ready or not): one dict
serves them all. Cached objects are never mutated (informer.py), so sharing is safe.
"""

from __future__ import annotations

from typing import Any

Object = dict[str, Any]

SERVICE_METADATA = ("name", "namespace", "uid", "resourceVersion", "annotations", "labels", "deletionTimestamp")
SERVICE_SPEC = ("type", "loadBalancerClass", "externalTrafficPolicy")
SLICE_METADATA = ("name", "namespace", "uid", "resourceVersion", "labels")
RECORD_METADATA = ("name", "uid", "resourceVersion")
# Distinct shared parts kept at most (each is a node's readiness or a spec's three fields): a
# cluster that has more just gets copies.
_SHARED_MAX = 4096
_shared: dict[tuple[Any, ...], Object] = {}


def _one(key: tuple[Any, ...], make: Object) -> Object:
    """The shared dict equal to `make`, which `key` names; `make` itself if it cannot be shared."""
    try:
        got = _shared.get(key)
    except TypeError:  # a value of a type the schema does not allow: kept as it is, not shared
        return make
    if got is None:
        got = make
        if len(_shared) < _SHARED_MAX:
            _shared[key] = got
    return got


def service(svc: Object) -> Object:
    """A Service without its ports, selector, cluster IPs and conditions."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    out: Object = {k: svc[k] for k in ("kind", "apiVersion") if k in svc}
    out["metadata"] = {k: meta[k] for k in SERVICE_METADATA if k in meta}
    if isinstance(meta.get("annotations"), dict):  # most Services' are alike: the pool's name
        out["metadata"]["annotations"] = _one(("annotations", *sorted(meta["annotations"].items())),
                                              meta["annotations"])
    kept = tuple((k, spec[k]) for k in SERVICE_SPEC if k in spec)
    out["spec"] = _one(("spec", kept), dict(kept))
    out["status"] = {"loadBalancer": (svc.get("status") or {}).get("loadBalancer") or {}}
    return out


def endpoint_slice(s: Object) -> Object:
    """An EndpointSlice as each node's readiness, once per node: without the endpoints' addresses,
    targets and zones, and the ports."""
    meta = s.get("metadata") or {}
    out: Object = {k: s[k] for k in ("kind", "apiVersion") if k in s}
    out["metadata"] = {k: meta[k] for k in SLICE_METADATA if k in meta}
    endpoints: list[Object] = []
    seen: set[tuple[Any, Any]] = set()
    for ep in s.get("endpoints") or []:
        node, ready = ep.get("nodeName"), (ep.get("conditions") or {}).get("ready")
        part = {"nodeName": node, "conditions": {"ready": ready}}
        try:
            if (node, ready) in seen:
                continue
            seen.add((node, ready))
        except TypeError:  # a value of a type the schema does not allow: kept as it is, not shared
            endpoints.append(part)
            continue
        endpoints.append(_one(("endpoint", node, ready), part))
    out["endpoints"] = endpoints
    return out


def record(r: Object) -> Object:
    """A node's L2NodeStatus as the agents read the others': the IPs it announces and its MACs
    (not where, since when, for which Services)."""
    meta = r.get("metadata") or {}
    status = r.get("status") or {}
    out: Object = {k: r[k] for k in ("kind", "apiVersion") if k in r}
    out["metadata"] = {k: meta[k] for k in RECORD_METADATA if k in meta}
    out["status"] = {"announcements": [{"ip": a.get("ip")} for a in status.get("announcements") or []
                                       if isinstance(a, dict)],
                     "macs": status.get("macs") or []}
    return out
