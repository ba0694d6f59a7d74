"""Address pools: parsing the IPAddressPool spec into ranges, and counting or walking usable addresses.

Everything is arithmetic on integers: an IPv6 /64 costs no more than a /32 of IPv4.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from leifur.ipam.errors import PoolError
from leifur.ipam.selectors import ServiceAllocation, parse_service_allocation, service_allocation_problems
from leifur.model.objects import Object
from leifur.model.service import IP

__all__ = [
    "AddressRange",
    "Pool",
    "PoolError",
    "find_overlaps",
    "is_buggy",
    "parse_address_entry",
    "parse_pool",
    "skip_buggy",
]


_IP_CLASS: dict[int, type[IP]] = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}
_BITS = {4: 32, 6: 128}


def is_buggy(value: int) -> bool:
    """Whether an IPv4 address (as an integer) ends in .0 or .255, which some old clients refuse to talk to."""
    return value & 0xFF in (0, 255)


def skip_buggy(value: int) -> int:
    """The first IPv4 address (as an integer) at or after `value` that does not end in .0 or .255."""
    low = value & 0xFF
    return value + 1 if low == 0 else value + 2 if low == 255 else value


def _count_congruent(lo: int, hi: int, residue: int) -> int:
    # How many x in [lo, hi] have x % 256 == residue; floor division keeps lo == 0 right.
    return (hi - residue) // 256 - (lo - 1 - residue) // 256


@dataclass(frozen=True)
class AddressRange:
    """An inclusive range of addresses of one family."""

    first: IP
    last: IP

    def __post_init__(self) -> None:
        # Strings are accepted for convenience; everything after this works on address objects.
        for field in ("first", "last"):
            value = getattr(self, field)
            if isinstance(value, str):
                object.__setattr__(self, field, ipaddress.ip_address(value))
            elif not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise PoolError(f"range {field} must be an IP address, got {value!r}")
        if self.first.version != self.last.version:
            raise PoolError(f"range {self.first}-{self.last} mixes IPv4 and IPv6")
        # Same family (checked above), so the integers order them; mypy cannot see that for the addresses.
        if int(self.first) > int(self.last):
            raise PoolError(f"range {self.first}-{self.last} starts after it ends; did you mean "
                            f"{self.last}-{self.first}?")

    @property
    def version(self) -> int:
        """4 or 6."""
        return self.first.version

    @property
    def size(self) -> int:
        """How many addresses the range spans (before any buggy-IP rule)."""
        return int(self.last) - int(self.first) + 1

    def __contains__(self, ip: object) -> bool:
        return (isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) and ip.version == self.version
                and int(self.first) <= int(ip) <= int(self.last))

    def overlaps(self, other: AddressRange) -> bool:
        """Whether the two ranges share at least one address."""
        return (self.version == other.version
                and int(self.first) <= int(other.last) and int(other.first) <= int(self.last))

    def as_network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The CIDR this range is exactly, or None."""
        size = self.size
        if size & (size - 1) or int(self.first) % size:
            return None
        return ipaddress.ip_network(f"{self.first}/{_BITS[self.version] - (size.bit_length() - 1)}")

    def __str__(self) -> str:
        network = self.as_network()
        return str(network) if network is not None else f"{self.first}-{self.last}"


def _parse_address(text: str, entry: str) -> IP:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise PoolError(f"{entry!r}: {text!r} is not an IPv4 or IPv6 address") from None


def parse_address_entry(entry: str) -> AddressRange:
    """Parse one `addresses` entry: a CIDR, a range "A-B", or a single address."""
    if not isinstance(entry, str):
        raise PoolError(f"{entry!r} must be a string: a CIDR (192.0.2.0/28), a range (192.0.2.10-192.0.2.20) "
                        "or an address")
    text = entry.strip()
    if "%" in text:
        raise PoolError(f"{entry!r}: an address with a zone (%...) cannot be a load-balancer IP")
    if "-" in text:
        parts = [p.strip() for p in text.split("-")]
        if len(parts) != 2 or not all(parts):
            raise PoolError(f"{entry!r} is not a range: write it as FIRST-LAST, e.g. 192.0.2.10-192.0.2.20")
        if any("/" in p for p in parts):
            raise PoolError(f"{entry!r}: a range goes from one address to another; it cannot contain a CIDR")
        first, last = (_parse_address(p, entry) for p in parts)
        if first.version != last.version:
            raise PoolError(f"{entry!r} mixes IPv4 and IPv6; a range must stay within one family")
        if int(first) > int(last):
            raise PoolError(f"{entry!r} starts after it ends; did you mean {last}-{first}?")
        return AddressRange(first, last)
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as strict_error:
            try:
                meant = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise PoolError(f"{entry!r} is not a valid CIDR ({strict_error})") from None
            raise PoolError(f"{entry!r} has host bits set; did you mean {meant}?") from None
        return AddressRange(network.network_address, network.broadcast_address)
    if not text:
        raise PoolError(f"{entry!r} is empty; write a CIDR, a range (A-B) or an address")
    try:
        address = _parse_address(text, entry)
    except PoolError:
        raise PoolError(f"{entry!r} is not a CIDR (192.0.2.0/28), a range (192.0.2.10-192.0.2.20) "
                        "or an IP address") from None
    return AddressRange(address, address)


def _first_overlap_pairs(ranges: Iterable[tuple[AddressRange, Any]]) -> list[tuple[Any, Any]]:
    """Pairs (earlier tag, later tag) of overlapping ranges, found by one sweep over ranges sorted by start.

    Each range is paired with the still-open range reaching furthest, which is enough to name every
    overlapping range at least once without comparing all pairs.
    """
    pairs = []
    ordered = sorted(ranges, key=lambda rt: (rt[0].version, int(rt[0].first), int(rt[0].last)))
    reach: tuple[int, int, Any] | None = None  # (version, last, tag) of the open range ending furthest
    for rng, tag in ordered:
        if reach is not None and reach[0] == rng.version and int(rng.first) <= reach[1]:
            pairs.append((reach[2], tag))
        if reach is None or reach[0] != rng.version or int(rng.last) > reach[1]:
            reach = (rng.version, int(rng.last), tag)
    return pairs


@dataclass(frozen=True)
class Pool:
    """A named set of address ranges to hand out, with its assignment policy."""

    name: str
    ranges: tuple[AddressRange, ...]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    allocation: ServiceAllocation | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", tuple(self.ranges))
        # Sizes are sums over ranges: overlapping ranges would count addresses twice.
        clashes = _first_overlap_pairs((r, r) for r in self.ranges)
        if clashes:
            raise PoolError(f"pool {self.name!r}: " + "; ".join(f"{a} overlaps {b}" for a, b in clashes))

    def families(self) -> set[int]:
        """The IP versions (4, 6) this pool has addresses of."""
        return {r.version for r in self.ranges}

    def _usable(self, ip: IP) -> bool:
        return not (self.avoid_buggy_ips and ip.version == 4 and is_buggy(int(ip)))

    def contains(self, ip: IP) -> bool:
        """Whether the pool may hand out this address (in a range, and not a buggy one when those are avoided)."""
        return any(ip in r for r in self.ranges) and self._usable(ip)

    def size(self, version: int) -> int:
        """The number of usable addresses of one family."""
        total = 0
        for r in self.ranges:
            if r.version != version:
                continue
            total += r.size
            if self.avoid_buggy_ips and version == 4:
                lo, hi = int(r.first), int(r.last)
                total -= _count_congruent(lo, hi, 0) + _count_congruent(lo, hi, 255)
        return total

    def addresses(self, version: int) -> Iterator[IP]:
        """The usable addresses of one family, lazily, in range order."""
        make = _IP_CLASS[version]
        skip = self.avoid_buggy_ips and version == 4
        for r in self.ranges:
            if r.version != version:
                continue
            value, last = int(r.first), int(r.last)
            while value <= last:
                if skip and is_buggy(value):
                    value = skip_buggy(value)
                    continue
                yield make(value)
                value += 1

    def __str__(self) -> str:
        return f"{self.name} ({', '.join(str(r) for r in self.ranges)})"


def _bool_problem(spec: Object, key: str) -> str | None:
    value = spec.get(key)
    if value is not None and not isinstance(value, bool):
        return f"spec.{key} must be true or false, got {value!r}"
    return None


def parse_pool(name: str, spec: Object) -> Pool:
    """Build a Pool from an IPAddressPool's spec (camelCase keys, as the API returns them).

    Every problem found is reported in one PoolError, so an operator can fix them all at once.
    """
    if not isinstance(spec, dict):
        raise PoolError(f"IPAddressPool {name!r}: spec must be an object, got {spec!r}")
    problems: list[str] = []
    parsed: list[tuple[AddressRange, tuple[int, str]]] = []
    addresses = spec.get("addresses")
    if addresses is None:
        problems.append("spec.addresses is required: list CIDRs, ranges (A-B) or addresses to hand out")
    elif not isinstance(addresses, list):
        problems.append(f"spec.addresses must be a list of CIDRs, ranges (A-B) or addresses, got {addresses!r}")
    elif not addresses:
        problems.append("spec.addresses is empty: list CIDRs, ranges (A-B) or addresses to hand out")
    else:
        for i, entry in enumerate(addresses):
            try:
                parsed.append((parse_address_entry(entry), (i, entry)))
            except PoolError as e:
                problems.append(f"spec.addresses[{i}]: {e}")
    for (i, a), (j, b) in _first_overlap_pairs(parsed):
        first, second = sorted(((i, a), (j, b)))
        problems.append(f"spec.addresses[{first[0]}] {first[1]!r} overlaps spec.addresses[{second[0]}] "
                        f"{second[1]!r}; each address may be listed once")
    problems.extend(p for p in (_bool_problem(spec, "autoAssign"), _bool_problem(spec, "avoidBuggyIPs")) if p)
    allocation_spec = spec.get("serviceAllocation")
    if allocation_spec is not None:
        problems.extend(service_allocation_problems(allocation_spec))
    if problems:
        raise PoolError(f"IPAddressPool {name!r}: " + "; ".join(problems), problems)
    auto_assign = spec.get("autoAssign")
    avoid_buggy = spec.get("avoidBuggyIPs")
    return Pool(
        name=name,
        ranges=tuple(r for r, _ in parsed),
        auto_assign=True if auto_assign is None else auto_assign,
        avoid_buggy_ips=bool(avoid_buggy),
        allocation=None if allocation_spec is None else parse_service_allocation(allocation_spec),
    )


def find_overlaps(pools: Iterable[Pool]) -> dict[str, list[str]]:
    """For each pool sharing addresses with other pools, the sorted names of those pools.

    One sweep over all ranges sorted by start, keeping the ranges still open in a heap keyed by their end.
    """
    ranges = sorted((r.version, int(r.first), int(r.last), p.name) for p in pools for r in p.ranges)
    found: dict[str, set[str]] = {}
    open_ranges: list[tuple[int, str]] = []  # (last, pool name), of the current family
    version = None
    for v, first, last, name in ranges:
        if v != version:
            open_ranges, version = [], v
        while open_ranges and open_ranges[0][0] < first:
            heapq.heappop(open_ranges)
        for _, other in open_ranges:
            if other != name:
                found.setdefault(name, set()).add(other)
                found.setdefault(other, set()).add(name)
        heapq.heappush(open_ranges, (last, name))
    return {name: sorted(others) for name, others in sorted(found.items())}
