"""Decide which IPs a Service holds, against the in-memory allocator. Pure: no I/O.

The allocator is the only state touched; the caller holds its lock and writes the outcome
to the API afterwards. Rules: never renumber a Service unless its user asked (requested
IPs, pool annotation, families); RequireDualStack gets both families or nothing;
PreferDualStack takes what it can.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from leifur.ipam.allocator import AllocationError, Allocator
from leifur.ipam.selectors import candidate_pools
from leifur.model.service import IP, ServiceRequest, ServiceTraits

REASON_ALLOCATED = "Allocated"
REASON_PARTIAL = "PartiallyAllocated"


@dataclass
class Outcome:
    ips: list[tuple[IP, str | None]] = field(default_factory=list)  # (ip, pool), in the Service's family order
    ok: bool = True
    reason: str = REASON_ALLOCATED
    message: str = ""

    @property
    def pools(self) -> list[str]:
        return sorted({p for _, p in self.ips if p})


def _may_keep(alloc: Allocator, ip: IP, requested_pool: str | None) -> bool:
    """A held IP stays unless the user named a pool that exists and does not contain it.

    An IP left outside every pool (the pool shrank or went away) also stays: it is reported,
    not renumbered.
    """
    if requested_pool is None or alloc.pool_of(ip) is None:
        return True
    pool = alloc.pools.get(requested_pool)
    return pool is None or pool.contains(ip)


def _origin(alloc: Allocator, ip: IP, allocated_from: tuple[str, ...]) -> str | None:
    """The pool a held IP counts as coming from: the one it came from while that pool still
    contains it (an overlapping pool created later must not take it over: advertisements select
    pools by name), else the first pool by name that contains it."""
    for name in allocated_from:
        pool = alloc.pools.get(name)
        if pool is not None and pool.contains(ip):
            return name
    return alloc.pool_of(ip)


def apply_traits(alloc: Allocator, traits: ServiceTraits) -> None:
    """Record changed ports, policy or sharing key. An IP now shared with an incompatible
    Service is given up by the one whose user changed it (this one)."""
    for other in alloc.update_traits(traits):
        for ip in alloc.ips_of(traits.key):
            if any(h.key == other for h in alloc.holders(ip)):
                alloc.release_ip(traits.key, ip)


def allocate(alloc: Allocator, req: ServiceRequest, namespace_labels: dict[str, str]) -> Outcome:
    """Bring the allocator in line with what the Service asks for, and say what it got."""
    key = req.key
    apply_traits(alloc, req.traits)
    snapshot = alloc.ips_of(key)

    wanted = tuple(f for f in req.families if not req.requested or f in req.requested)
    for ip in alloc.ips_of(key):
        if ip.version not in wanted:
            alloc.release_ip(key, ip)

    candidates = candidate_pools(alloc.pools.values(), req.namespace, namespace_labels, req.labels, req.pool)
    got: dict[int, tuple[IP, str | None]] = {}
    failures: list[AllocationError] = []
    for version in wanted:
        held = [ip for ip in alloc.ips_of(key) if ip.version == version]
        try:
            if version in req.requested:
                ip = req.requested[version]
                if held and held[0] == ip and _may_keep(alloc, ip, req.pool):
                    got[version] = (ip, _origin(alloc, ip, req.allocated_from))  # even if its pool shrank
                else:
                    # assign() replaces the held IP of this family only if the requested one can be had.
                    got[version] = (ip, alloc.assign(req.traits, ip, req.pool))
            elif held and _may_keep(alloc, held[0], req.pool):
                got[version] = (held[0], _origin(alloc, held[0], req.allocated_from))
            else:
                # Also when the user pointed the Service at another pool: allocate() replaces the
                # held IP only once a new one is found.
                got[version] = alloc.allocate(req.traits, version, candidates)
        except AllocationError as e:
            failures.append(e)
            still = [ip for ip in alloc.ips_of(key) if ip.version == version]
            if still:  # a failed change leaves the Service with what it had
                got[version] = (still[0], _origin(alloc, still[0], req.allocated_from))

    if failures and req.required_families:
        # Both or nothing for a new Service; one that already had its IPs keeps them.
        for ip in alloc.ips_of(key):
            alloc.release_ip(key, ip)
        for ip in snapshot:
            alloc.adopt(req.traits, ip)
        got = {ip.version: (ip, _origin(alloc, ip, req.allocated_from)) for ip in alloc.ips_of(key)}
    out = Outcome(ips=[got[v] for v in wanted if v in got])
    if failures:
        detail = "; ".join(str(e) for e in failures)
        # PreferDualStack is satisfied by any family; every other policy wants them all.
        out.ok = bool(got) and req.policy == "PreferDualStack"
        out.reason = REASON_PARTIAL if out.ok else failures[0].reason
        if req.required_families and not got:
            out.message = f"RequireDualStack needs an IP of every family and none was assigned: {detail}"
        elif got:
            out.message = f"holds {', '.join(str(ip) for ip, _ in out.ips)}; could not do more: {detail}"
        else:
            out.message = detail
    else:
        out.message = "assigned " + ", ".join(
            f"{ip}" + (f" from pool {p}" if p else " (outside every pool)") for ip, p in out.ips
        )
    return out
