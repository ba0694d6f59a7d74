"""The reconciles: Services get IPs, pools get status and deletion protection.

Both syncs are idempotent: they read from the informers' caches, compare with what should
be, write only the difference, and raise on failure so that the work queue retries.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from leifur.controller import allocation, metrics
from leifur.controller.writes import condition, same_conditions
from leifur.ipam.allocator import AllocationError, Allocator
from leifur.ipam.pool import Pool, PoolError, find_overlaps, parse_pool
from leifur.kube import logfields
from leifur.model import names, service
from leifur.model.objects import key_of
from leifur.model.service import IP, ServiceTraits

log = logging.getLogger(__name__)


# What the reconciles need from the machinery around them (Informer, EventRecorder, the writers
# in writes.py): only these, so that tests can drive them with in-memory fakes.

class Lister(Protocol):
    def get(self, key: str) -> dict | None: ...

    def objects(self) -> list[dict]: ...


class Recorder(Protocol):
    def event(self, obj: dict, type_: str, reason: str, message: str) -> None: ...


class ServiceWrites(Protocol):
    def patch_metadata(self, svc: dict, finalizers: list[str], annotations: dict[str, str | None]) -> dict: ...

    def patch_status(self, svc: dict, ingress: list[dict], conditions: list[dict],
                     finalizers: list[str] | None = None,
                     annotations: dict[str, str | None] | None = None) -> dict: ...


class PoolWrites(Protocol):
    def patch_finalizers(self, pool: dict, finalizers: list[str]) -> dict: ...

    def patch_status(self, pool: dict, status: dict) -> dict: ...


class State:
    """The allocator and the pool set, shared by both reconciles under one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.allocator = Allocator()
        self.parsed: dict[str, Pool | PoolError] = {}  # every pool object, valid or not
        self.overlaps: dict[str, list[str]] = {}
        self.outside: list[str] = []  # Services holding an IP that no pool contains
        self.pending: set[str] = set()  # Services not (fully) given what they ask for
        self.last_valid: dict[str, Pool] = {}  # for a pool edited into something invalid: what it held

    def refresh_pools(self, pool_objects: list[dict]) -> bool:
        """Re-read the pool set from the cache. True if what can be allocated from changed."""
        parsed: dict[str, Pool | PoolError] = {}
        for obj in pool_objects:
            name = obj["metadata"]["name"]
            try:
                parsed[name] = parse_pool(name, obj.get("spec") or {})
            except PoolError as e:
                parsed[name] = e
        usable = [
            p for obj in pool_objects
            if isinstance(p := parsed[obj["metadata"]["name"]], Pool) and not obj["metadata"].get("deletionTimestamp")
        ]
        with self.lock:
            before = dict(self.allocator.pools)
            self.parsed = parsed
            self.last_valid = {n: p for n, p in parsed.items() if isinstance(p, Pool)} | {
                n: p for n, p in self.last_valid.items() if n in parsed and not isinstance(parsed[n], Pool)}
            self.overlaps = find_overlaps(p for p in parsed.values() if isinstance(p, Pool))
            self.outside = self.allocator.set_pools(usable)
            return before != self.allocator.pools

    def adopt_all(self, services: list[dict], lb_class: str | None) -> list[tuple[str, list[str], str]]:
        """Load every IP our Services show in their status, before anything new is allocated: those
        we numbered, and those that became ours showing IPs someone else gave them (MetalLB's, before
        their first sync). If two claim one IP they may not share, ours wins over a newcomer's, then
        the older Service. Returns what the others lost: (Service key, the holders, why). Pure
        bookkeeping: no API calls."""
        lost = []
        svcs = sorted(services, key=lambda s: (not holds_ours(s, lb_class),
                                               s["metadata"].get("creationTimestamp", ""), key_of(s)))
        with self.lock:
            for svc in svcs:
                if not (holds_ours(svc, lb_class) or service.is_ours(svc, lb_class)):
                    continue
                try:
                    traits = service.traits_of(svc)
                except service.ServiceSpecError:
                    traits = ServiceTraits(key_of(svc))  # claims its IPs; its sync reports the problem
                for ip in service.ingress_ips(svc):
                    try:
                        self.allocator.adopt(traits, ip)
                    except AllocationError as e:
                        lost.append((traits.key, e.holders, f"{traits.key} shows {ip} in its status, but {e}"))
        return lost

    def holders_in(self, pool: Pool, orphaned_only: bool = False) -> dict[str, list[IP]]:
        """Services holding IPs inside a pool's ranges (whether or not the pool is still usable);
        `orphaned_only`: only IPs that no usable pool contains."""
        with self.lock:
            out: dict[str, list[IP]] = {}
            for key in self.allocator.keys():
                ips = [ip for ip in self.allocator.ips_of(key) if pool.contains(ip)
                       and not (orphaned_only and self.allocator.pool_of(ip) is not None)]
                if ips:
                    out[key] = ips
            return out


def address_conflict(key: str, ips: list[str], records: list[dict]) -> tuple[str, str] | None:
    """The `leifur.io/AddressConflict` condition's (reason, message) for Service `key` holding
    `ips`, from the agents' L2NodeStatus records; None if no record lists a conflict for them.
    A conflict counts for the Service when the record names it, or names no Service at all."""
    found = []
    for r in records:
        node = (r.get("metadata") or {}).get("name", "?")
        for c in (r.get("status") or {}).get("conflicts") or []:
            if not isinstance(c, dict) or c.get("ip") not in ips:
                continue
            services = c.get("services") or []
            if services and key not in services:
                continue
            found.append((str(c.get("ip")), node, str(c.get("kind")), str(c.get("mac")), str(c.get("interface") or "")))
    if not found:
        return None
    parts = []
    for ip, node, kind, mac, interface in sorted(found):
        where = f"node {node}" + (f" on {interface}" if interface else "")
        if kind == "InUse":
            parts.append(f"{ip} is in use by a host outside the cluster ({mac}, answered the probe of {where}): "
                         "not announced")
        else:
            parts.append(f"{ip} is claimed by a host outside the cluster ({mac}, seen by {where})")
    reason = names.REASON_ADDRESS_IN_USE if any(f[2] == "InUse" for f in found) else names.REASON_ADDRESS_CLAIMED
    return reason, "; ".join(parts)


def with_address_conflict(conditions: list[dict], found: tuple[str, str] | None,
                          generation: int | None) -> list[dict]:
    """`conditions` with the AddressConflict condition set (True) while there is one, and without it otherwise."""
    if found is None:
        return [c for c in conditions if c.get("type") != names.COND_ADDRESS_CONFLICT]
    return condition(conditions, names.COND_ADDRESS_CONFLICT, True, found[0], found[1], generation)


def holds_ours(svc: dict, lb_class: str | None) -> bool:
    """A Service whose IPs count as held: it carries our finalizer and is ours, or is being deleted."""
    meta = svc["metadata"]
    return names.SERVICE_FINALIZER in (meta.get("finalizers") or []) and (
        service.is_ours(svc, lb_class) or bool(meta.get("deletionTimestamp")))


class ServiceReconciler:
    def __init__(self, state: State, services: Lister, namespaces: Lister, writer: ServiceWrites,
                 recorder: Recorder, load_balancer_class: str | None,
                 enqueue_pool: Callable[[str], None], enqueue_service: Callable[[str], None],
                 records: Lister | None = None) -> None:
        self.state = state
        self.records = records  # the agents' L2NodeStatus records, for the AddressConflict condition
        self.services = services
        self.namespaces = namespaces
        self.writer = writer
        self.recorder = recorder
        self.lb_class = load_balancer_class
        self.enqueue_pool = enqueue_pool
        self.enqueue_service = enqueue_service
        # Service key -> resourceVersions that its last sync's writes replaced (see _sync).
        self._superseded: dict[str, set[str]] = {}

    # -- start-up -----------------------------------------------------------------------

    def rebuild(self, services: list[dict]) -> None:
        """Load every IP our Services hold from their status, before any new allocation.

        `services` comes from a fresh LIST, not the cache: a standby's cache may be behind the
        last leader's writes, and an IP missed here could be handed out twice. A Service that
        loses a claim here is reconciled like any conflict.
        """
        for key, _holders, why in self.state.adopt_all(services, self.lb_class):
            log.warning("rebuild: %s keeps no claim: %s", key, why, extra=logfields.fields(service=key))

    # -- the sync -----------------------------------------------------------------------

    def sync(self, key: str) -> None:
        with metrics.RECONCILE_DURATION.labels("service").time():
            self._sync(key)

    def _release(self, key: str) -> list[IP]:
        with self.state.lock:
            ips = self.state.allocator.release(key)
            self.state.pending.discard(key)
            waiting = sorted(self.state.pending) if ips else []
        for ip in ips:
            self._touch_pools_of(ip)
        # A freed IP may be what a waiting Service needs.
        for other in waiting:
            self.enqueue_service(other)
        return ips

    def _touch_pools_of(self, ip: IP) -> None:
        with self.state.lock:
            pools = [name for name, p in self.state.parsed.items() if isinstance(p, Pool) and p.contains(ip)]
        for name in pools:
            self.enqueue_pool(name)

    def _sync(self, key: str) -> None:
        svc = self.services.get(key)
        if svc is None:
            # Gone without our finalizer (it was never ours, or it is already cleaned up).
            self._superseded.pop(key, None)
            self._release(key)
            return
        meta = svc["metadata"]
        if meta.get("resourceVersion") in self._superseded.get(key, ()):
            # A version our own writes replaced (the informer has not caught up): a write built on
            # it would only fail with 409. The newer version's event syncs the Service again.
            return
        self._superseded.pop(key, None)
        if meta.get("deletionTimestamp") or not service.is_ours(svc, self.lb_class):
            # Status first, then the allocator: an IP is free only once no status shows it, so a
            # restart in between cannot hand it back to this Service after someone else got it.
            # The writer logs what the Service let go of (finalizer removed).
            self._let_go(svc)
            self._release(key)
            return

        ns = self.namespaces.get(svc["metadata"]["namespace"]) or {}
        ns_labels = (ns.get("metadata") or {}).get("labels") or {}
        with self.state.lock:
            alloc = self.state.allocator
            held_before = set(alloc.ips_of(key))
            try:
                req = service.parse(svc)
            except service.ServiceSpecError as e:
                # Bad input: say so on the object and keep what it holds, but with its current
                # ports and policy, so that it stops sharing where it no longer may.
                with contextlib.suppress(service.ServiceSpecError):
                    allocation.apply_traits(alloc, service.traits_of(svc))
                held = [(ip, alloc.pool_of(ip)) for ip in alloc.ips_of(key)]
                # One that held nothing of ours keeps what its status shows, untouched, until it is
                # readable (not one that just gave an IP up: that one is not to be shown again).
                kept = [] if held_before else service.ingress_ips(svc)
                outcome = allocation.Outcome(ips=held, kept=kept, ok=False, reason=e.reason, message=str(e))
            else:
                outcome = allocation.allocate(alloc, req, ns_labels)
            freed = held_before - set(alloc.ips_of(key))
            if outcome.ok and outcome.reason == allocation.REASON_ALLOCATED:
                self.state.pending.discard(key)
            else:
                self.state.pending.add(key)
            waiting = sorted(self.state.pending - {key}) if freed else []
        for other in waiting:  # this Service let an IP go: someone may be waiting for it
            self.enqueue_service(other)
        self._write(svc, outcome)

    def _write(self, svc: dict, outcome: allocation.Outcome) -> None:
        key = key_of(svc)
        meta = svc["metadata"]
        replaced = {meta.get("resourceVersion")}  # what our writes below replace
        before = [str(ip) for ip in service.ingress_ips(svc)]
        after = [str(ip) for ip in outcome.shown]
        current = (meta.get("annotations") or {}).get(names.ANN_ALLOCATED_FROM_POOL)
        origin = set(outcome.pools)
        if current and any(p is None for _, p in outcome.ips):
            # An IP its pool no longer contains: the annotation still says where it came from, so
            # that the pool can report the Service as left outside.
            origin |= set(current.split(","))
        pools = ",".join(sorted(origin)) or None
        finalizers = list(meta.get("finalizers") or [])
        metadata: tuple[list[str], dict[str, str | None]] | None = None
        if names.SERVICE_FINALIZER not in finalizers or current != pools:
            if names.SERVICE_FINALIZER not in finalizers:
                finalizers.append(names.SERVICE_FINALIZER)
            metadata = finalizers, ({names.ANN_ALLOCATED_FROM_POOL: pools} if current != pools else {})
        status = svc.get("status") or {}
        old_conditions = status.get("conditions")
        conditions = condition(old_conditions, names.COND_SERVICE_ALLOCATED, outcome.ok, outcome.reason,
                               outcome.message, meta.get("generation"))
        if self.records is not None:
            found = address_conflict(key, after, self.records.objects()) if after else None
            conditions = with_address_conflict(conditions, found, meta.get("generation"))
        status_changes = after != before or not same_conditions(old_conditions, conditions)
        if metadata is not None and not status_changes:
            self.writer.patch_metadata(svc, *metadata)
            self._superseded[key] = replaced
        if status_changes:
            ingress = [{"ip": ip, "ipMode": "VIP"} for ip in after] + service.foreign_ingress(svc)
            # The finalizer goes on with the status or before it, never after: no IP can leak.
            self.writer.patch_status(svc, ingress, conditions, *(metadata or ()))
            self._superseded[key] = replaced
            for ip in {*before, *after}:
                self._touch_pools_of(ipaddress.ip_address(ip))
            if after != before and after:
                self.recorder.event(svc, "Normal", "IPAllocated", outcome.message)
                metrics.ALLOCATIONS.inc()
            if outcome.adopted:
                self.recorder.event(svc, "Normal", "IPAdopted",
                                    f"kept {', '.join(map(str, outcome.adopted))}, which its status showed before "
                                    f"Leifur handled it: {outcome.message}")
            for note in outcome.notes:
                self.recorder.event(svc, "Warning", "AnnotationIgnored", note)
            if not outcome.ok or outcome.reason != allocation.REASON_ALLOCATED:
                self.recorder.event(svc, "Warning", "AllocationFailed", f"{outcome.reason}: {outcome.message}")
                metrics.ALLOCATION_FAILURES.labels(outcome.reason).inc()
        log.debug("%s: %s", key, outcome.message, extra=logfields.fields(service=key))

    def _let_go(self, svc: dict) -> None:
        """The Service is being deleted or is no longer ours: clear what we wrote, then the finalizer."""
        finalizers = svc["metadata"].get("finalizers") or []
        annotations = svc["metadata"].get("annotations") or {}
        if names.SERVICE_FINALIZER not in finalizers and names.ANN_ALLOCATED_FROM_POOL not in annotations:
            return
        status = svc.get("status") or {}
        if not svc["metadata"].get("deletionTimestamp") and (
            service.ingress_ips(svc) or any(c.get("type") == names.COND_SERVICE_ALLOCATED
                                            for c in status.get("conditions") or [])
        ):
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != names.COND_SERVICE_ALLOCATED]
            svc = self.writer.patch_status(svc, service.foreign_ingress(svc), conditions)
        self.writer.patch_metadata(svc, [f for f in finalizers if f != names.SERVICE_FINALIZER],
                                   {names.ANN_ALLOCATED_FROM_POOL: None})


class PoolReconciler:
    def __init__(self, state: State, pools: Lister, services: Lister, writer: PoolWrites,
                 recorder: Recorder, enqueue_all_services: Callable[[], None]) -> None:
        self.state = state
        self.pools = pools
        self.services = services
        self.writer = writer
        self.recorder = recorder
        self.enqueue_all_services = enqueue_all_services

    def sync(self, name: str) -> None:
        with metrics.RECONCILE_DURATION.labels("ipaddresspool").time():
            self._sync(name)

    def _sync(self, name: str) -> None:
        if self.state.refresh_pools(self.pools.objects()):
            # New or changed addresses: pending Services may now be satisfiable.
            self.enqueue_all_services()
        obj = self.pools.get(name)
        if obj is None:
            metrics.forget_pool(name)
            return
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        parsed = self.state.parsed.get(name)
        if meta.get("deletionTimestamp"):
            # An invalid pool still protects what its last valid version handed out. An address
            # another pool still contains is no reason to wait: its Service is credited to that one.
            last = parsed if isinstance(parsed, Pool) else self.state.last_valid.get(name)
            users = self.state.holders_in(last, orphaned_only=True) if last is not None else {}
            if users:
                listed = ", ".join(sorted(users)[:10]) + (" …" if len(users) > 10 else "")
                self.recorder.event(obj, "Warning", "DeletionBlocked",
                                    f"{len(users)} Service(s) still hold IPs from this pool: {listed}")
                return
            if names.POOL_FINALIZER in finalizers:
                self.writer.patch_finalizers(obj, [f for f in finalizers if f != names.POOL_FINALIZER])
            return
        if names.POOL_FINALIZER not in finalizers:
            obj = self.writer.patch_finalizers(obj, [*finalizers, names.POOL_FINALIZER])
        status = self._status(obj, parsed)
        old = obj.get("status") or {}
        # A merge patch keeps keys it does not mention: a family the pool no longer has is nulled.
        for family in ("ipv4", "ipv6"):
            status.setdefault(family, None)
        if {k: v for k, v in status.items() if k != "conditions" and v is not None} != {
            k: v for k, v in old.items() if k != "conditions"
        } or not same_conditions(old.get("conditions"), status["conditions"]):
            self._events(obj, old.get("conditions"), status["conditions"])
            self.writer.patch_status(obj, status)

    def _status(self, obj: dict, parsed: Pool | PoolError | None) -> dict:
        meta = obj["metadata"]
        gen = meta.get("generation")
        conds = (obj.get("status") or {}).get("conditions")
        name = meta["name"]
        status: dict = {"observedGeneration": gen}
        if not isinstance(parsed, Pool):
            conds = condition(conds, names.COND_POOL_VALID, False, "InvalidSpec", str(parsed), gen)
            metrics.forget_pool(name)
            status["conditions"] = conds
            return status
        conds = condition(conds, names.COND_POOL_VALID, True, "Valid", "addresses parsed", gen)
        others = self.state.overlaps.get(name, [])
        conds = condition(conds, names.COND_POOL_OVERLAPPING, bool(others), "Overlap" if others else "NoOverlap",
                          f"shares addresses with {', '.join(others)}" if others else "no overlap with other pools",
                          gen)
        users = self.state.holders_in(parsed)
        outside = self._outside(name)
        conds = condition(conds, names.COND_POOL_SERVICES_OUTSIDE, bool(outside),
                          "AddressesRemoved" if outside else "AllInside",
                          ("Services allocated from this pool hold IPs it no longer contains: " + ", ".join(outside))
                          if outside else "every allocation is inside the pool", gen)
        for version in (4, 6):
            if version not in parsed.families():
                continue
            total = parsed.size(version)
            in_use = len({ip for ips in users.values() for ip in ips if ip.version == version})
            status[f"ipv{version}"] = {"total": _count(total), "inUse": in_use, "available": _count(total - in_use)}
            metrics.set_pool_usage(name, version, total, in_use)
        status["conditions"] = conds
        return status

    def _outside(self, pool_name: str) -> list[str]:
        """Services whose annotation names this pool but whose IPs no pool contains."""
        with self.state.lock:
            outside = list(self.state.outside)
        out = []
        for key in outside:
            svc = self.services.get(key)
            ann = ((svc or {}).get("metadata") or {}).get("annotations") or {}
            if pool_name in (ann.get(names.ANN_ALLOCATED_FROM_POOL) or "").split(","):
                with self.state.lock:
                    alloc = self.state.allocator
                    ips = ", ".join(str(ip) for ip in alloc.ips_of(key) if alloc.pool_of(ip) is None)
                out.append(f"{key} ({ips})")
        return sorted(out)

    def _events(self, obj: dict, old: list[dict] | None, new: list[dict]) -> None:
        prev = {c["type"]: c for c in old or []}
        for c in new:
            if prev.get(c["type"], {}).get("status") == c["status"]:
                continue
            bad = (c["type"] == names.COND_POOL_VALID and c["status"] == "False") or (
                c["type"] != names.COND_POOL_VALID and c["status"] == "True")
            if bad:
                self.recorder.event(obj, "Warning", c["reason"], c["message"])


def _count(n: int) -> int | str:
    """IPv6 sizes overflow int64: the CRD takes them as strings."""
    return n if n < 2**63 else str(n)
