"""Random sequences of allocator operations against a brute-force model, checking the invariants after each step.

The model is plain dictionaries and full enumeration of tiny pools; the allocator uses sorted integers and
binary search. Every answer (IP, pool, error reason) must agree, and the invariants must hold throughout:
no IP held by two incompatible Services (unless update_traits reported that very pair and nothing resolved it
yet), IPs are inside a pool when given (except by adopt(), which records what the cluster already holds), one IP
per family per Service, release frees everything, usage adds up.
"""

from __future__ import annotations

import ipaddress
from functools import partial

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from leifur.ipam.allocator import (
    EXHAUSTED,
    FAMILY_UNAVAILABLE,
    NO_POOL,
    NOT_IN_POOL,
    REASONS,
    TAKEN,
    AllocationError,
    Allocator,
)
from leifur.ipam.pool import Pool, parse_pool
from leifur.ipam.sharing import incompatibility
from leifur.model.service import ServiceTraits

KEYS = [f"ns/s{i}" for i in range(10)]
PORTS = [("TCP", 80), ("TCP", 443), ("UDP", 53), ("TCP", 22)]
SELECTORS = [None, frozenset({("app", "a")}), frozenset({("app", "b")})]
CATALOGUE = {
    "a": ["192.0.2.0/29"],
    "b": ["192.0.2.254-192.0.3.1"],  # crosses a .255/.0 boundary
    "c": ["2001:db8::1-2001:db8::4"],
    "d": ["192.0.2.4-192.0.2.5", "2001:db8::3"],  # overlaps a and c
}
NAMES = [*CATALOGUE, "ghost"]  # "ghost" is never a pool
ALL_IPS = [ipaddress.ip_address(a) for a in (
    "192.0.2.0", "192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.7", "192.0.2.8",
    "192.0.2.254", "192.0.2.255", "192.0.3.0", "192.0.3.1", "192.0.3.2", "203.0.113.1",
    "2001:db8::", "2001:db8::1", "2001:db8::3", "2001:db8::4", "2001:db8::5", "2001:db8::ff",
)]


def make_pool(name: str, avoid_buggy: bool) -> Pool:
    return parse_pool(name, {"addresses": CATALOGUE[name], "avoidBuggyIPs": avoid_buggy})


def traits_for(key: str) -> st.SearchStrategy[ServiceTraits]:
    return st.builds(
        ServiceTraits,
        key=st.just(key),
        # Weighted towards sharing, so that sharing and its conflicts happen often.
        sharing_key=st.sampled_from([None, "k1", "k1", "k1", "k2"]),
        ports=st.frozensets(st.sampled_from(PORTS), min_size=1, max_size=2),
        traffic_policy=st.sampled_from(["Cluster", "Cluster", "Cluster", "Local"]),
        selector=st.sampled_from([*SELECTORS, SELECTORS[1]]),
    )


any_traits = st.sampled_from(KEYS).flatmap(traits_for)
some_pools = st.dictionaries(st.sampled_from(list(CATALOGUE)), st.booleans(), min_size=1)
pool_configs = st.one_of(some_pools, some_pools, some_pools, st.just({}))  # rarely none at all


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.alloc = Allocator()
        self.pools: dict[str, Pool] = {}
        self.ips: dict[str, dict[int, ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
        self.traits: dict[str, ServiceTraits] = {}
        self.tolerated: set[frozenset[str]] = set()  # pairs update_traits reported as now incompatible
        self.epoch = 0  # bumped by set_pools
        self.given_at: dict[tuple[str, object], int] = {}  # (key, ip) -> epoch it was given in

    # The model's view

    def holders_of(self, ip) -> list[str]:
        return sorted(k for k, ips in self.ips.items() if ip in ips.values())

    def conflicts(self, traits: ServiceTraits, ip) -> list[str]:
        return [h for h in self.holders_of(ip) if incompatibility(traits, self.traits[h]) is not None]

    def other_family_conflicts(self, traits: ServiceTraits, version: int) -> list[str]:
        return [h for v, kept in self.ips.get(traits.key, {}).items() if v != version
                for h in self.conflicts(traits, kept)]

    def give(self, traits: ServiceTraits, ip, inside: bool = True) -> None:
        self.ips.setdefault(traits.key, {})[ip.version] = ip
        self.traits[traits.key] = traits
        self.given_at[(traits.key, ip)] = self.epoch if inside else -1  # adopt() may record an IP outside pools
        # After a successful assign/allocate the Service conflicts with nobody: the invariant checks that.
        self.tolerated = {pair for pair in self.tolerated if traits.key not in pair}

    def outcome(self, expected_error: str | None, call):
        """Run call; an expected error must come with exactly that reason, anything else must not raise."""
        event(f"{call.func.__name__}: {expected_error or 'ok'}")  # shown by --hypothesis-show-statistics
        try:
            result = call()
        except AllocationError as e:
            assert e.reason in REASONS and str(e)
            assert e.reason == expected_error, f"expected {expected_error}, got {e.reason}: {e}"
            return None
        assert expected_error is None, f"expected AllocationError {expected_error}, got {result!r}"
        return result

    # Operations

    @initialize(config=some_pools)
    def start(self, config) -> None:
        self.set_pools(config)

    @rule(config=pool_configs)
    def set_pools(self, config) -> None:
        pools = [make_pool(name, avoid) for name, avoid in config.items()]
        outside = self.alloc.set_pools(pools)
        self.pools = {p.name: p for p in pools}
        self.epoch += 1
        expected = sorted(k for k, ips in self.ips.items()
                          if any(not any(p.contains(ip) for p in pools) for ip in ips.values()))
        assert outside == expected

    @rule(name=st.sampled_from(list(CATALOGUE)))
    def toggle_avoid_buggy(self, name) -> None:
        """The operator flips avoidBuggyIPs on one pool: held .0/.255 addresses fall outside it."""
        config = {n: p.avoid_buggy_ips for n, p in self.pools.items()}
        config[name] = not config.get(name, True)
        self.set_pools(config)

    @rule(traits=any_traits, ip=st.sampled_from(ALL_IPS), pool=st.none() | st.sampled_from(NAMES))
    def assign(self, traits, ip, pool) -> None:
        self.check_assign(traits, ip, pool)

    def shareable_holders(self) -> list[str]:
        return sorted(k for k, t in self.traits.items() if t.sharing_key is not None)

    @rule(data=st.data())
    def join(self, data) -> None:
        """Another Service asks for an IP already held, with settings meant to fit: sharing happens often."""
        # A no-op without candidates (a precondition would make Hypothesis reject many runs instead).
        if not self.shareable_holders():
            return
        holder = self.traits[data.draw(st.sampled_from(self.shareable_holders()), label="holder")]
        ips = sorted(self.ips[holder.key].values(), key=lambda a: (a.version, int(a)))
        ip = data.draw(st.sampled_from(ips), label="ip")
        taken = {port for h in self.holders_of(ip) for port in self.traits[h].ports}
        free = [p for p in PORTS if p not in taken] or PORTS
        traits = ServiceTraits(key=data.draw(st.sampled_from(KEYS), label="key"), sharing_key=holder.sharing_key,
                               ports=frozenset(data.draw(st.lists(st.sampled_from(free), min_size=1, max_size=2))),
                               traffic_policy=holder.traffic_policy, selector=holder.selector)
        self.check_assign(traits, ip, None)

    def check_assign(self, traits, ip, pool) -> None:
        if pool is not None:
            home = pool if pool in self.pools and self.pools[pool].contains(ip) else None
        else:
            home = next((n for n in sorted(self.pools) if self.pools[n].contains(ip)), None)
        if home is None:
            error = NOT_IN_POOL
        elif self.conflicts(traits, ip) or self.other_family_conflicts(traits, ip.version):
            error = TAKEN
        else:
            error = None
        result = self.outcome(error, partial(self.alloc.assign, traits, ip, pool))
        if error is None:
            assert result == home and self.pools[home].contains(ip)
            self.give(traits, ip)

    @rule(traits=any_traits, ip=st.sampled_from(ALL_IPS))
    def adopt(self, traits, ip) -> None:
        """Rebuilding from status: the IP is recorded even outside every pool, but never against a conflict."""
        taken = self.conflicts(traits, ip) or self.other_family_conflicts(traits, ip.version)
        home = next((n for n in sorted(self.pools) if self.pools[n].contains(ip)), None)
        result = self.outcome(TAKEN if taken else None, partial(self.alloc.adopt, traits, ip))
        if not taken:
            assert result == home
            self.give(traits, ip, inside=home is not None)

    @rule(key=st.sampled_from(KEYS), ip=st.sampled_from(ALL_IPS), data=st.data())
    def release_ip(self, key, ip, data) -> None:
        held = sorted(self.ips.get(key, {}).values(), key=lambda a: (a.version, int(a)))
        if held and data.draw(st.booleans(), label="one it holds"):
            ip = data.draw(st.sampled_from(held), label="held ip")
        holds = self.ips.get(key, {}).get(ip.version) == ip
        assert self.alloc.release_ip(key, ip) is holds
        if holds:
            del self.ips[key][ip.version]
            if not self.ips[key]:
                del self.ips[key]
                del self.traits[key]
                self.tolerated = {pair for pair in self.tolerated if key not in pair}

    @rule(traits=any_traits, version=st.sampled_from([4, 6]), stale=st.booleans(), data=st.data())
    def allocate(self, traits, version, stale, data) -> None:
        # Mostly names of current pools (in any order), sometimes anything, "ghost" included.
        current = sorted(self.pools) or NAMES
        names = data.draw(st.lists(st.sampled_from(current), min_size=1, max_size=4, unique=True)
                          | st.lists(st.sampled_from(NAMES), max_size=4, unique=True), label="pool names")
        # The caller may hand in Pool objects that are stale or unknown; only their names count.
        given = [Pool("ghost", ()) if n == "ghost" else self.pools[n] if n in self.pools and not stale
                 else make_pool(n, stale) for n in names]
        known = [self.pools[n] for n in names if n in self.pools]
        candidates = [p for p in known if version in p.families()]
        expected = None
        if not known:
            error = NO_POOL
        elif not candidates:
            error = FAMILY_UNAVAILABLE
        elif self.other_family_conflicts(traits, version):
            error = TAKEN
        else:
            expected = self.expected_allocation(traits, version, candidates)
            error = EXHAUSTED if expected is None else None
        result = self.outcome(error, partial(self.alloc.allocate, traits, version, given))
        if error is None:
            assert result == expected
            ip, home = result
            assert ip.version == version and self.pools[home].contains(ip)
            self.give(traits, ip)
            if len(self.holders_of(ip)) > 1:
                event("allocate: shared")

    def expected_allocation(self, traits, version, candidates):
        current = self.ips.get(traits.key, {}).get(version)
        if current is not None and not self.conflicts(traits, current):
            home = next((p.name for p in candidates if p.contains(current)), None)
            if home is not None:
                return current, home
        if traits.sharing_key is not None:
            shared = {ips[version] for k, ips in self.ips.items()
                      if k != traits.key and version in ips and self.traits[k].sharing_key == traits.sharing_key}
            shared = {ip for ip in shared if not self.conflicts(traits, ip)}
            for p in candidates:
                inside = sorted(ip for ip in shared if p.contains(ip))
                if inside:
                    return inside[0], p.name
        for p in candidates:
            for ip in p.addresses(version):
                if not self.holders_of(ip):
                    return ip, p.name
        return None

    @rule(key=st.sampled_from(KEYS))
    def release(self, key) -> None:
        expected = [ip for _, ip in sorted(self.ips.pop(key, {}).items())]
        assert self.alloc.release(key) == expected
        self.traits.pop(key, None)
        self.tolerated = {pair for pair in self.tolerated if key not in pair}
        assert self.alloc.ips_of(key) == [] and key not in set(self.alloc.keys())

    @rule(data=st.data())
    def update_traits(self, data) -> None:
        # Half the time pick a Service that shares an IP: that is where conflicts can arise.
        sharing = sorted(k for k, ips in self.ips.items() if any(len(self.holders_of(ip)) > 1 for ip in ips.values()))
        keys = sharing if sharing and data.draw(st.booleans(), label="a sharer") else KEYS
        traits = data.draw(st.sampled_from(keys).flatmap(traits_for), label="traits")
        ips = self.ips.get(traits.key)
        expected = sorted({h for ip in (ips or {}).values() for h in self.conflicts(traits, ip)})
        assert self.alloc.update_traits(traits) == expected
        event(f"update_traits: {'conflicts' if expected else 'fine'}")
        if ips:
            self.traits[traits.key] = traits
            self.tolerated |= {frozenset({traits.key, h}) for h in expected}

    # Invariants

    @invariant()
    def holdings_match_the_model(self) -> None:
        assert self.alloc.keys() == sorted(k for k, ips in self.ips.items() if ips)
        for key in KEYS:
            ips = self.alloc.ips_of(key)
            assert ips == [ip for _, ip in sorted(self.ips.get(key, {}).items())]
            assert len({ip.version for ip in ips}) == len(ips)  # one per family
        for ip in {*ALL_IPS, *(ip for ips in self.ips.values() for ip in ips.values())}:
            holders = self.alloc.holders(ip)
            assert [t.key for t in holders] == self.holders_of(ip)
            assert all(t == self.traits[t.key] for t in holders)

    @invariant()
    def co_holders_are_compatible(self) -> None:
        for ip in {ip for ips in self.ips.values() for ip in ips.values()}:
            holders = self.alloc.holders(ip)
            for i, a in enumerate(holders):
                for b in holders[i + 1:]:
                    if incompatibility(a, b) is not None:
                        assert frozenset({a.key, b.key}) in self.tolerated, f"{ip}: {a.key} and {b.key} clash"

    @invariant()
    def ips_were_inside_a_pool(self) -> None:
        for key, ips in self.ips.items():
            for ip in ips.values():
                home = self.alloc.pool_of(ip)
                assert home == next((n for n in sorted(self.pools) if self.pools[n].contains(ip)), None)
                if self.given_at[(key, ip)] == self.epoch:  # no pool change since: must still be inside
                    assert home is not None

    @invariant()
    def usage_adds_up(self) -> None:
        assert set(self.alloc.pools) == set(self.pools)
        held = {ip for ips in self.ips.values() for ip in ips.values()}
        for name, pool in self.pools.items():
            usage = self.alloc.usage(name)
            assert set(usage) == pool.families()
            for version, (total, in_use) in usage.items():
                assert total == len(list(pool.addresses(version)))
                assert in_use == len({ip for ip in held if ip.version == version and pool.contains(ip)})
                assert 0 <= in_use <= total


AllocatorMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestAllocatorProperties = AllocatorMachine.TestCase

