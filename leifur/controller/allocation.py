"""Decide which IPs a Service holds, against the in-memory allocator. Pure: no I/O.

The allocator is the only state touched; the caller holds its lock and writes the outcome
to the API afterwards. Rules: never renumber a Service unless its user asked (requested
IPs, pool annotation, families); an IP a Service shows when it becomes ours (MetalLB's, or a
hand edit) is adopted, and one that cannot be is reported and left where it is, never replaced;
RequireDualStack gets both families or nothing; PreferDualStack takes what it can.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from leifur.ipam.allocator import NOT_IN_POOL, AllocationError, Allocator
from leifur.ipam.selectors import candidate_pools
from leifur.model.service import IP, ServiceRequest, ServiceTraits

REASON_ALLOCATED = "Allocated"
REASON_PARTIAL = "PartiallyAllocated"


@dataclass
class Outcome:
    ips: list[tuple[IP, str | None]] = field(default_factory=list)  # (ip, pool), in the Service's family order
    adopted: list[IP] = field(default_factory=list)  # shown in its status before it was ours, now held
    kept: list[IP] = field(default_factory=list)  # shown in its status, not held (adoption refused): left there
    ok: bool = True
    reason: str = REASON_ALLOCATED
    message: str = ""
    families: tuple[int, ...] = (4, 6)  # the Service's order, for the status
    notes: tuple[str, ...] = ()  # annotations ignored because another spelling wins (also in the message)

    @property
    def shown(self) -> list[IP]:
        """What its status shows: what it holds and what it keeps, in the Service's family order."""
        ips = [ip for ip, _ in self.ips] + self.kept
        return sorted(ips, key=lambda ip: self.families.index(ip.version) if ip.version in self.families else 9)

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


def _adoptable(req: ServiceRequest, held_before: list[IP], wanted: tuple[int, ...]) -> dict[int, IP]:
    """Per family, the IP its status shows that we did not give it: one of a Service that just
    became ours, or one we lost at a restart to an older claim. Not one we released ourselves in
    this sync (it now conflicts), and not where the user requests an exact IP."""
    out: dict[int, IP] = {}
    for ip in req.shown:
        if ip.version in wanted and ip.version not in req.requested and ip not in held_before:
            out.setdefault(ip.version, ip)
    return out


def allocate(alloc: Allocator, req: ServiceRequest, namespace_labels: dict[str, str]) -> Outcome:
    """Bring the allocator in line with what the Service asks for, and say what it got."""
    key = req.key
    snapshot = alloc.ips_of(key)
    apply_traits(alloc, req.traits)

    wanted = tuple(f for f in req.families if not req.requested or f in req.requested)
    for ip in alloc.ips_of(key):
        if ip.version not in wanted:
            alloc.release_ip(key, ip)
    adoptable = _adoptable(req, snapshot, wanted)

    candidates = candidate_pools(alloc.pools.values(), req.namespace, namespace_labels, req.labels, req.pool)
    got: dict[int, tuple[IP, str | None]] = {}
    failures: list[AllocationError] = []
    adopted: list[IP] = []
    for version in wanted:
        held = [ip for ip in alloc.ips_of(key) if ip.version == version]
        if not held and version in adoptable:
            shown = adoptable[version]
            try:
                alloc.adopt(req.traits, shown)
            except AllocationError as e:
                # Another Service holds it: the conflict is reported, and neither Service moves.
                failures.append(AllocationError(e.reason, f"its status shows {shown}, but {e}; it is left "
                                                f"there and not replaced until the conflict is resolved",
                                                e.holders))
                continue
            adopted.append(shown)
            held = [shown]
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
    out = Outcome(ips=[got[v] for v in wanted if v in got], families=wanted)
    out.adopted = [ip for ip in adopted if any(ip == g for g, _ in out.ips)]
    out.kept = [ip for v, ip in adoptable.items() if v not in got]
    if not req.allocated_from:
        # Never allocated from one of our pools: shown before it was ours, outside all of them. It
        # keeps it (nobody else gets it), but no agent announces it.
        failures += [AllocationError(NOT_IN_POOL, f"its status shows {ip}, which no IPAddressPool contains: "
                                     "kept, but not announced; add it to a pool, or request another IP")
                     for ip, pool in out.ips if pool is None and ip not in req.requested.values()]
    if failures:
        detail = "; ".join(str(e) for e in failures)
        # PreferDualStack is satisfied by any family; every other policy wants them all.
        out.ok = bool(got) and req.policy == "PreferDualStack" and not out.kept
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
    if req.notes:
        out.notes = req.notes
        out.message += "; " + "; ".join(req.notes)
    return out
