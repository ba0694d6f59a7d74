"""Who holds which IP: assignment of requested IPs, allocation of free ones, release, and pool changes.

Not thread-safe: the caller serialises access. Used addresses are kept per family in a sorted list of
integers, so finding the lowest free address is a few binary searches, whatever the pool size.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence

from leifur.ipam.errors import PoolError
from leifur.ipam.pool import Pool, is_buggy, skip_buggy
from leifur.ipam.sharing import incompatibility
from leifur.model.service import IP, ServiceTraits

# Reasons, also used by the controller as Event and condition reasons.
NOT_IN_POOL = "NotInPool"  # the requested IP is in no pool (or not in the requested pool)
TAKEN = "Taken"  # the IP is held by a Service it may not share with
EXHAUSTED = "Exhausted"  # every usable address of the family in the candidate pools is taken
NO_POOL = "NoPool"  # there is no pool to allocate from
FAMILY_UNAVAILABLE = "FamilyUnavailable"  # the candidate pools have no address of the wanted family
REASONS = frozenset({NOT_IN_POOL, TAKEN, EXHAUSTED, NO_POOL, FAMILY_UNAVAILABLE})


class AllocationError(Exception):
    """An IP could not be given; `reason` is one of REASONS, the message says why for a human.

    For TAKEN, `holders` names the Services in the way.
    """

    def __init__(self, reason: str, message: str, holders: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.holders = list(holders)


def _family_name(version: int) -> str:
    return f"IPv{version}"


class Allocator:
    """The IPs held by Services, drawn from a set of pools."""

    def __init__(self, pools: Iterable[Pool] = ()) -> None:
        self._pools: dict[str, Pool] = {}
        self._traits: dict[str, ServiceTraits] = {}
        self._ips: dict[str, dict[int, IP]] = {}  # key -> {version: ip}
        self._holders: dict[IP, set[str]] = {}
        self._used: dict[int, list[int]] = {4: [], 6: []}  # sorted, distinct held addresses per family
        self._sharers: dict[str, set[str]] = {}  # sharing key -> holder keys carrying it
        self.set_pools(pools)

    # Pools

    @property
    def pools(self) -> dict[str, Pool]:
        """A copy of the current pools by name."""
        return dict(self._pools)

    def set_pools(self, pools: Iterable[Pool]) -> list[str]:
        """Replace the pools, keeping every assignment; return the Services holding an IP no pool has now."""
        new: dict[str, Pool] = {}
        for pool in pools:
            if pool.name in new:
                raise PoolError(f"two pools are named {pool.name!r}; pool names must be unique")
            new[pool.name] = pool
        self._pools = dict(sorted(new.items()))
        return sorted(key for key, ips in self._ips.items() if any(self.pool_of(ip) is None for ip in ips.values()))

    def pool_of(self, ip: IP) -> str | None:
        """The first pool, by name, that contains this IP."""
        return next((name for name, pool in self._pools.items() if pool.contains(ip)), None)

    # Queries

    def ips_of(self, key: str) -> list[IP]:
        """The IPs a Service holds, IPv4 first."""
        return [ip for _, ip in sorted(self._ips.get(key, {}).items())]

    def holders(self, ip: IP) -> list[ServiceTraits]:
        """The Services holding an IP, by key."""
        return [self._traits[k] for k in sorted(self._holders.get(ip, ()))]

    def keys(self) -> list[str]:
        """Every Service holding at least one IP."""
        return sorted(self._ips)

    def usage(self, pool: str) -> dict[int, tuple[int, int]]:
        """Per family in the pool: (usable addresses, distinct addresses in use)."""
        p = self._pools.get(pool)
        if p is None:
            raise KeyError(f"no pool named {pool!r}")
        result = {}
        for version in sorted(p.families()):
            used = self._used[version]
            in_use = 0
            for r in p.ranges:
                if r.version != version:
                    continue
                lo, hi = bisect_left(used, int(r.first)), bisect_right(used, int(r.last))
                in_use += hi - lo
                if p.avoid_buggy_ips and version == 4:
                    # Held before the pool started avoiding them; not part of the pool any more.
                    in_use -= sum(1 for value in used[lo:hi] if is_buggy(value))
            result[version] = (p.size(version), in_use)
        return result

    # Changes

    def assign(self, traits: ServiceTraits, ip: IP, pool: str | None = None) -> str:
        """Give this exact IP to the Service (a requested IP, or state rebuilt from status); return its pool."""
        ip = self._as_ip(ip)
        if pool is not None:
            named = self._pools.get(pool)
            if named is None:
                raise AllocationError(NOT_IN_POOL, f"{ip} was requested from pool {pool!r}, which does not exist")
            if not named.contains(ip):
                raise AllocationError(NOT_IN_POOL, f"{ip} is not in pool {named}{self._buggy_hint(named, ip)}")
            pool_name = pool
        else:
            found = self.pool_of(ip)
            if found is None:
                hint = next((self._buggy_hint(p, ip) for p in self._pools.values() if any(ip in r for r in p.ranges)),
                            "")
                raise AllocationError(NOT_IN_POOL, f"{ip} is not in any pool{hint}")
            pool_name = found
        self._check_compatible(traits, ip)
        self._take(traits, ip)
        return pool_name

    def allocate(self, traits: ServiceTraits, version: int, pools: Sequence[Pool]) -> tuple[IP, str]:
        """Pick an IP of one family for the Service from the first of `pools` that can give one.

        Keeps the Service's current IP when it is still in these pools and still shareable, then prefers an IP
        already held by compatible Services with the same sharing key, then the lowest free address.
        Pools are looked up by name in the current pool set, so a stale Pool object cannot leak addresses.
        """
        if version not in (4, 6):
            raise ValueError(f"IP version must be 4 or 6, got {version!r}")
        family = _family_name(version)
        names = list(dict.fromkeys(p.name for p in pools))
        if not names:
            raise AllocationError(NO_POOL, f"no pool may serve {traits.key}: no pool selects it, or none has "
                                           "autoAssign")
        known = [self._pools[n] for n in names if n in self._pools]
        if not known:
            raise AllocationError(NO_POOL, f"none of the pools {', '.join(names)} exists")
        candidates = [p for p in known if version in p.families()]
        if not candidates:
            raise AllocationError(FAMILY_UNAVAILABLE, f"none of the pools {', '.join(p.name for p in known)} has "
                                                      f"{family} addresses")
        self._check_compatible(traits, None, skip_version=version)

        current = self._ips.get(traits.key, {}).get(version)
        if current is not None and not self._conflicts(traits, current):
            home = next((p.name for p in candidates if p.contains(current)), None)
            if home is not None:
                self._take(traits, current)
                return current, home

        if traits.sharing_key is not None:
            shared = self._shareable(traits, version)
            for p in candidates:
                inside = [ip for ip in shared if p.contains(ip)]
                if inside:
                    ip = min(inside)
                    self._take(traits, ip)
                    return ip, p.name

        for p in candidates:
            free = self._first_free(p, version)
            if free is not None:
                self._take(traits, free)
                return free, p.name

        detail = ", ".join(f"{p.name} ({used}/{total} in use)"
                           for p in candidates for total, used in [self.usage(p.name)[version]])
        raise AllocationError(EXHAUSTED, f"no {family} address left for {traits.key} in pools {detail}")

    def adopt(self, traits: ServiceTraits, ip: IP) -> str | None:
        """Record an IP the Service already holds in the cluster, inside a pool or not; return its pool.

        For rebuilding state from Services' status after a restart: an IP left outside every pool (the
        pool shrank while we were down) is still held, so it is neither renumbered nor given to another
        Service. Refuses only an IP held by an incompatible Service (TAKEN).
        """
        ip = self._as_ip(ip)
        self._check_compatible(traits, ip)
        self._take(traits, ip)
        return self.pool_of(ip)

    def release_ip(self, key: str, ip: IP) -> bool:
        """Free one IP of a Service; False if it did not hold it."""
        if self._ips.get(key, {}).get(ip.version) != ip:
            return False
        self._drop(key, ip)
        return True

    def release(self, key: str) -> list[IP]:
        """Free every IP the Service holds; return them."""
        released = self.ips_of(key)
        for ip in released:
            self._drop(key, ip)
        return released

    def update_traits(self, traits: ServiceTraits) -> list[str]:
        """Record changed ports, policy or sharing key; keep the IPs; return co-holders now incompatible.

        Unlike assign and allocate, this does not refuse: the Service holds its IPs in the cluster already,
        and the caller decides what to do about the conflicts it returns.
        """
        ips = self._ips.get(traits.key)
        if not ips:
            return []
        self._set_traits(traits)
        return sorted({holder for ip in ips.values() for holder, _ in self._conflicts(traits, ip)})

    # Internals

    @staticmethod
    def _as_ip(ip: IP | str) -> IP:
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return ip
        try:
            return ipaddress.ip_address(ip)
        except ValueError:
            raise AllocationError(NOT_IN_POOL, f"{ip!r} is not an IP address") from None

    @staticmethod
    def _buggy_hint(pool: Pool, ip: IP) -> str:
        if pool.avoid_buggy_ips and ip.version == 4 and is_buggy(int(ip)) and any(ip in r for r in pool.ranges):
            return f" (pool {pool.name} has avoidBuggyIPs: addresses ending in .0 or .255 are not handed out)"
        return ""

    def _conflicts(self, traits: ServiceTraits, ip: IP) -> list[tuple[str, str]]:
        """(holder, reason) for every other holder of ip that may not share it with a Service of these traits."""
        found = []
        for holder in sorted(self._holders.get(ip, ())):
            reason = incompatibility(traits, self._traits[holder])
            if reason is not None:
                found.append((holder, reason))
        return found

    def _check_compatible(self, traits: ServiceTraits, ip: IP | None, skip_version: int | None = None) -> None:
        """Raise TAKEN unless the Service, with these traits, may hold ip and keep its other IPs."""
        if ip is not None:
            conflicts = self._conflicts(traits, ip)
            if conflicts:
                holder, reason = conflicts[0]
                raise AllocationError(TAKEN, f"{ip} is held by {holder}: {reason}", [h for h, _ in conflicts])
        # Traits belong to the Service, not to one IP: new traits must suit the IPs it keeps too.
        for version, kept in self._ips.get(traits.key, {}).items():
            if version in (skip_version, ip.version if ip is not None else None):
                continue
            conflicts = self._conflicts(traits, kept)
            if conflicts:
                holder, reason = conflicts[0]
                raise AllocationError(TAKEN, f"{traits.key} keeps {kept}, shared with {holder}, and with its "
                                             f"current settings may not share it: {reason}",
                                      [h for h, _ in conflicts])

    def _shareable(self, traits: ServiceTraits, version: int) -> list[IP]:
        """IPs of this family held by Services with the same sharing key, all compatible with these traits."""
        ips = set()
        for other in self._sharers.get(traits.sharing_key, ()):  # type: ignore[arg-type]
            ip = self._ips[other].get(version)
            if ip is not None and other != traits.key:
                ips.add(ip)
        return sorted(ip for ip in ips if not self._conflicts(traits, ip))

    def _first_free(self, pool: Pool, version: int) -> IP | None:
        """The first usable address of the pool, in range order, that nobody holds."""
        used = self._used[version]
        avoid = pool.avoid_buggy_ips and version == 4
        for r in pool.ranges:
            if r.version != version:
                continue
            value, last = int(r.first), int(r.last)
            if avoid:
                value = skip_buggy(value)
            while value <= last:
                # used[start + i] == value + i holds for a prefix of i (distinct sorted integers): binary-search
                # the length of that run of held addresses and jump past it.
                start = bisect_left(used, value)
                lo, hi = 0, min(len(used) - start, last - value + 1)
                while lo < hi:
                    mid = (lo + hi) // 2
                    if used[start + mid] == value + mid:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo == 0:
                    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
                value += lo
                if avoid:
                    value = skip_buggy(value)
        return None

    def _set_traits(self, traits: ServiceTraits) -> None:
        old = self._traits.get(traits.key)
        if old is not None and old.sharing_key is not None:
            self._sharers[old.sharing_key].discard(traits.key)
            if not self._sharers[old.sharing_key]:
                del self._sharers[old.sharing_key]
        self._traits[traits.key] = traits
        if traits.sharing_key is not None:
            self._sharers.setdefault(traits.sharing_key, set()).add(traits.key)

    def _take(self, traits: ServiceTraits, ip: IP) -> None:
        """Make ip the Service's IP of its family, releasing the one it replaces."""
        key = traits.key
        previous = self._ips.get(key, {}).get(ip.version)
        if previous is not None and previous != ip:
            self._drop(key, previous)
        self._ips.setdefault(key, {})[ip.version] = ip
        holders = self._holders.setdefault(ip, set())
        if not holders:
            insort(self._used[ip.version], int(ip))
        holders.add(key)
        self._set_traits(traits)

    def _drop(self, key: str, ip: IP) -> None:
        holders = self._holders[ip]
        holders.discard(key)
        if not holders:
            del self._holders[ip]
            used = self._used[ip.version]
            del used[bisect_left(used, int(ip))]
        ips = self._ips[key]
        del ips[ip.version]
        if not ips:
            del self._ips[key]
            old = self._traits.pop(key)
            if old.sharing_key is not None:
                self._sharers[old.sharing_key].discard(key)
                if not self._sharers[old.sharing_key]:
                    del self._sharers[old.sharing_key]
