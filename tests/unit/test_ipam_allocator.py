"""The allocator: requested IPs, free-IP allocation, sharing, release, pool changes and usage."""

from __future__ import annotations

import ipaddress
import time

import pytest

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
from leifur.ipam.pool import parse_pool
from leifur.model.service import ServiceTraits

ip = ipaddress.ip_address


def pool(name, *addresses, **spec):
    return parse_pool(name, {"addresses": list(addresses), **spec})


def svc(key, sharing_key=None, ports=(("TCP", 80),), policy="Cluster", selector=None):
    return ServiceTraits(key=key, sharing_key=sharing_key, ports=frozenset(ports), traffic_policy=policy,
                         selector=selector)


def test_reason_vocabulary():
    assert {NOT_IN_POOL, TAKEN, EXHAUSTED, NO_POOL, FAMILY_UNAVAILABLE} == REASONS
    assert {"NotInPool", "Taken", "Exhausted", "NoPool", "FamilyUnavailable"} == REASONS


def test_allocates_lowest_free_address_of_the_family_from_the_first_pool():
    a, b = pool("a", "192.0.2.10-192.0.2.11", "2001:db8::/126"), pool("b", "198.51.100.0/30")
    alloc = Allocator([a, b])
    assert alloc.allocate(svc("ns/1"), 4, [a, b]) == (ip("192.0.2.10"), "a")
    assert alloc.allocate(svc("ns/1"), 6, [a, b]) == (ip("2001:db8::"), "a")
    assert alloc.allocate(svc("ns/2"), 4, [a, b]) == (ip("192.0.2.11"), "a")
    assert alloc.allocate(svc("ns/3"), 4, [a, b]) == (ip("198.51.100.0"), "b")  # a is full: next pool
    assert alloc.allocate(svc("ns/4"), 4, [b, a]) == (ip("198.51.100.1"), "b")  # the caller's order counts
    assert alloc.ips_of("ns/1") == [ip("192.0.2.10"), ip("2001:db8::")]
    assert alloc.keys() == ["ns/1", "ns/2", "ns/3", "ns/4"]
    assert alloc.usage("a") == {4: (2, 2), 6: (4, 1)}
    assert alloc.usage("b") == {4: (4, 2)}


def test_allocate_is_idempotent():
    a = pool("a", "192.0.2.0/29")
    alloc = Allocator([a])
    first = alloc.allocate(svc("ns/1"), 4, [a])
    assert alloc.allocate(svc("ns/1"), 4, [a]) == first
    assert alloc.allocate(svc("ns/1", ports=[("TCP", 443)]), 4, [a]) == first
    assert alloc.holders(first[0]) == [svc("ns/1", ports=[("TCP", 443)])]  # traits updated
    assert alloc.usage("a") == {4: (8, 1)}


def test_buggy_pool_allocation_skips_edges():
    a = pool("a", "198.51.100.255-198.51.101.1", "192.0.2.0", "192.0.2.1", avoidBuggyIPs=True)
    alloc = Allocator([a])
    assert alloc.allocate(svc("ns/1"), 4, [a]) == (ip("198.51.101.1"), "a")
    assert alloc.allocate(svc("ns/2"), 4, [a]) == (ip("192.0.2.1"), "a")
    with pytest.raises(AllocationError) as err:
        alloc.allocate(svc("ns/3"), 4, [a])
    assert err.value.reason == EXHAUSTED
    assert alloc.usage("a") == {4: (2, 2)}


def test_exhaustion_names_the_pools():
    a, b = pool("a", "192.0.2.1"), pool("b", "192.0.2.2", "2001:db8::1")
    alloc = Allocator([a, b])
    alloc.allocate(svc("ns/1"), 4, [a, b])
    alloc.allocate(svc("ns/2"), 4, [a, b])
    with pytest.raises(AllocationError) as err:
        alloc.allocate(svc("ns/3"), 4, [a, b])
    assert err.value.reason == EXHAUSTED
    message = str(err.value)
    assert "IPv4" in message and "ns/3" in message and "a (1/1 in use)" in message and "b (1/1 in use)" in message
    assert alloc.ips_of("ns/3") == []  # a failure leaves nothing behind
    assert alloc.allocate(svc("ns/3"), 6, [a, b]) == (ip("2001:db8::1"), "b")


def test_release_then_reallocation_gets_the_same_ip():
    a = pool("a", "192.0.2.0/30")
    alloc = Allocator([a])
    ips = [alloc.allocate(svc(f"ns/{i}"), 4, [a])[0] for i in range(4)]
    assert ips == [ip(f"192.0.2.{i}") for i in range(4)]
    assert alloc.release("ns/1") == [ip("192.0.2.1")]
    assert alloc.release("ns/1") == []
    assert alloc.holders(ip("192.0.2.1")) == [] and "ns/1" not in set(alloc.keys())
    assert alloc.usage("a") == {4: (4, 3)}
    assert alloc.allocate(svc("ns/9"), 4, [a]) == (ip("192.0.2.1"), "a")


def test_no_pool_and_family_unavailable():
    v4 = pool("v4", "192.0.2.0/30")
    alloc = Allocator([v4])
    with pytest.raises(AllocationError) as err:
        alloc.allocate(svc("ns/1"), 4, [])
    assert err.value.reason == NO_POOL and "ns/1" in str(err.value)
    with pytest.raises(AllocationError) as err:
        alloc.allocate(svc("ns/1"), 6, [v4])
    assert err.value.reason == FAMILY_UNAVAILABLE and "IPv6" in str(err.value) and "v4" in str(err.value)
    stranger = pool("stranger", "198.51.100.0/30")  # not one of the allocator's pools
    with pytest.raises(AllocationError) as err:
        alloc.allocate(svc("ns/1"), 4, [stranger])
    assert err.value.reason == NO_POOL and "stranger" in str(err.value)
    assert alloc.keys() == []


def test_allocate_uses_the_current_version_of_a_pool():
    old = pool("a", "192.0.2.0/30")
    alloc = Allocator([old])
    alloc.set_pools([pool("a", "198.51.100.7")])
    assert alloc.allocate(svc("ns/1"), 4, [old]) == (ip("198.51.100.7"), "a")


def test_allocate_moves_a_service_whose_ip_left_the_candidate_pools():
    a, b = pool("a", "192.0.2.1"), pool("b", "198.51.100.1")
    alloc = Allocator([a, b])
    alloc.allocate(svc("ns/1"), 4, [a])
    assert alloc.allocate(svc("ns/1"), 4, [b]) == (ip("198.51.100.1"), "b")
    assert alloc.ips_of("ns/1") == [ip("198.51.100.1")]
    assert alloc.holders(ip("192.0.2.1")) == []


def test_allocate_prefers_sharing_with_the_same_key():
    a = pool("a", "192.0.2.0/29")
    alloc = Allocator([a])
    alloc.allocate(svc("ns/other"), 4, [a])
    web, _ = alloc.allocate(svc("ns/web", sharing_key="k", ports=[("TCP", 80)]), 4, [a])
    assert alloc.allocate(svc("ns/dns", sharing_key="k", ports=[("UDP", 53)]), 4, [a]) == (web, "a")
    assert [t.key for t in alloc.holders(web)] == ["ns/dns", "ns/web"]
    assert alloc.usage("a") == {4: (8, 2)}
    # Same key but a clashing port: a fresh address instead.
    clash, _ = alloc.allocate(svc("ns/web2", sharing_key="k", ports=[("TCP", 80)]), 4, [a])
    assert clash not in (web, ip("192.0.2.0"))
    # Another key never lands on a shared address.
    other, _ = alloc.allocate(svc("ns/x", sharing_key="other", ports=[("TCP", 9)]), 4, [a])
    assert other not in (web, clash, ip("192.0.2.0"))


def test_sharing_can_use_a_full_pool():
    a = pool("a", "192.0.2.1")
    alloc = Allocator([a])
    alloc.allocate(svc("ns/web", sharing_key="k"), 4, [a])
    assert alloc.allocate(svc("ns/ssh", sharing_key="k", ports=[("TCP", 22)]), 4, [a]) == (ip("192.0.2.1"), "a")
    with pytest.raises(AllocationError) as err:
        alloc.allocate(svc("ns/web2", sharing_key="k"), 4, [a])
    assert err.value.reason == EXHAUSTED


def test_sharing_respects_the_given_pools():
    a, b = pool("a", "192.0.2.1"), pool("b", "198.51.100.1")
    alloc = Allocator([a, b])
    alloc.allocate(svc("ns/web", sharing_key="k"), 4, [a])
    assert alloc.allocate(svc("ns/ssh", sharing_key="k", ports=[("TCP", 22)]), 4, [b]) == (ip("198.51.100.1"), "b")


def test_assign_requested_ip_and_errors():
    a, b = pool("a", "192.0.2.0/29", avoidBuggyIPs=True), pool("b", "198.51.100.0/29")
    alloc = Allocator([a, b])
    assert alloc.assign(svc("ns/1"), ip("192.0.2.5")) == "a"
    assert alloc.assign(svc("ns/1"), ip("192.0.2.5")) == "a"  # idempotent
    assert alloc.assign(svc("ns/2"), "198.51.100.3", pool="b") == "b"  # a string is fine too
    assert alloc.ips_of("ns/2") == [ip("198.51.100.3")]

    with pytest.raises(AllocationError) as err:
        alloc.assign(svc("ns/3"), ip("203.0.113.1"))
    assert err.value.reason == NOT_IN_POOL and "203.0.113.1 is not in any pool" in str(err.value)
    with pytest.raises(AllocationError) as err:
        alloc.assign(svc("ns/3"), ip("192.0.2.1"), pool="b")
    assert err.value.reason == NOT_IN_POOL and "not in pool b" in str(err.value)
    with pytest.raises(AllocationError) as err:
        alloc.assign(svc("ns/3"), ip("192.0.2.1"), pool="nope")
    assert err.value.reason == NOT_IN_POOL and "'nope', which does not exist" in str(err.value)
    with pytest.raises(AllocationError) as err:
        alloc.assign(svc("ns/3"), ip("192.0.2.0"))
    assert err.value.reason == NOT_IN_POOL and "avoidBuggyIPs" in str(err.value)
    with pytest.raises(AllocationError) as err:
        alloc.assign(svc("ns/3"), "not-an-ip")
    assert err.value.reason == NOT_IN_POOL

    with pytest.raises(AllocationError) as err:
        alloc.assign(svc("ns/3"), ip("192.0.2.5"))
    assert err.value.reason == TAKEN and err.value.holders == ["ns/1"]
    assert "192.0.2.5 is held by ns/1: ns/1 holds it and does not share" in str(err.value)
    assert alloc.ips_of("ns/3") == []


def test_assign_taken_names_the_sharing_reason():
    a = pool("a", "192.0.2.0/29")
    alloc = Allocator([a])
    alloc.assign(svc("ns/1", sharing_key="k", ports=[("TCP", 80)]), ip("192.0.2.1"))
    with pytest.raises(AllocationError) as err:
        alloc.assign(svc("ns/2", sharing_key="k", ports=[("TCP", 80)]), ip("192.0.2.1"))
    assert err.value.reason == TAKEN and "port 80/TCP is used by both" in str(err.value)
    with pytest.raises(AllocationError) as err:
        alloc.assign(svc("ns/2", sharing_key="k", ports=[("TCP", 443)], policy="Local", selector={"a": "b"}),
                     ip("192.0.2.1"))
    assert err.value.reason == TAKEN and "Local" in str(err.value)
    assert alloc.assign(svc("ns/2", sharing_key="k", ports=[("TCP", 443)]), ip("192.0.2.1")) == "a"
    assert [t.key for t in alloc.holders(ip("192.0.2.1"))] == ["ns/1", "ns/2"]


def test_one_ip_per_family_assign_replaces():
    a = pool("a", "192.0.2.0/29", "2001:db8::/125")
    alloc = Allocator([a])
    alloc.assign(svc("ns/1"), ip("192.0.2.1"))
    alloc.assign(svc("ns/1"), ip("2001:db8::1"))
    alloc.assign(svc("ns/1"), ip("192.0.2.2"))
    assert alloc.ips_of("ns/1") == [ip("192.0.2.2"), ip("2001:db8::1")]
    assert alloc.holders(ip("192.0.2.1")) == []
    assert alloc.usage("a") == {4: (8, 1), 6: (8, 1)}
    assert alloc.allocate(svc("ns/2"), 4, [a]) == (ip("192.0.2.0"), "a")
    assert alloc.allocate(svc("ns/3"), 4, [a]) == (ip("192.0.2.1"), "a")  # the replaced one is free again


def test_new_traits_must_suit_the_other_family_too():
    a = pool("a", "192.0.2.0/29", "2001:db8::/125")
    alloc = Allocator([a])
    alloc.assign(svc("ns/1", sharing_key="k", ports=[("TCP", 80)]), ip("2001:db8::1"))
    alloc.assign(svc("ns/2", sharing_key="k", ports=[("TCP", 443)]), ip("2001:db8::1"))
    before = alloc.holders(ip("2001:db8::1"))
    # ns/2 now wants port 80 too: it may not keep sharing its IPv6 address with ns/1.
    with pytest.raises(AllocationError) as err:
        alloc.assign(svc("ns/2", sharing_key="k", ports=[("TCP", 80)]), ip("192.0.2.3"))
    assert err.value.reason == TAKEN and "2001:db8::1" in str(err.value) and err.value.holders == ["ns/1"]
    with pytest.raises(AllocationError) as err:
        alloc.allocate(svc("ns/2", sharing_key="k", ports=[("TCP", 80)]), 4, [a])
    assert err.value.reason == TAKEN
    assert alloc.holders(ip("2001:db8::1")) == before and alloc.ips_of("ns/2") == [ip("2001:db8::1")]


def test_allocate_leaves_an_ip_it_may_no_longer_share():
    a = pool("a", "192.0.2.0/29")
    alloc = Allocator([a])
    alloc.allocate(svc("ns/1", sharing_key="k", ports=[("TCP", 80)]), 4, [a])
    shared, _ = alloc.allocate(svc("ns/2", sharing_key="k", ports=[("TCP", 443)]), 4, [a])
    moved, _ = alloc.allocate(svc("ns/2", sharing_key="k", ports=[("TCP", 80)]), 4, [a])
    assert moved != shared
    assert [t.key for t in alloc.holders(shared)] == ["ns/1"]


def test_update_traits_reports_conflicts_and_keeps_ips():
    a = pool("a", "192.0.2.0/29")
    alloc = Allocator([a])
    alloc.assign(svc("ns/1", sharing_key="k", ports=[("TCP", 80)]), ip("192.0.2.1"))
    alloc.assign(svc("ns/2", sharing_key="k", ports=[("TCP", 443)]), ip("192.0.2.1"))
    alloc.assign(svc("ns/3", sharing_key="k", ports=[("TCP", 22)]), ip("192.0.2.1"))
    assert alloc.update_traits(svc("ns/2", sharing_key="k", ports=[("TCP", 8443)])) == []
    assert alloc.update_traits(svc("ns/2", sharing_key="k", ports=[("TCP", 80), ("TCP", 22)])) == ["ns/1", "ns/3"]
    assert alloc.ips_of("ns/2") == [ip("192.0.2.1")]
    assert alloc.holders(ip("192.0.2.1"))[1].ports == {("TCP", 80), ("TCP", 22)}
    assert alloc.update_traits(svc("ns/2", sharing_key=None, ports=[("TCP", 443)])) == ["ns/1", "ns/3"]
    assert alloc.update_traits(svc("ns/unknown")) == []
    assert "ns/unknown" not in set(alloc.keys())


def test_set_pools_keeps_assignments_and_reports_outsiders():
    a, b = pool("a", "192.0.2.0/29"), pool("b", "198.51.100.0/29", "2001:db8::/126")
    alloc = Allocator([a, b])
    alloc.allocate(svc("ns/1"), 4, [a])
    alloc.allocate(svc("ns/2"), 4, [b])
    alloc.allocate(svc("ns/2"), 6, [b])
    alloc.assign(svc("ns/3"), ip("192.0.2.7"))
    assert alloc.set_pools([a, b]) == []
    smaller_a = pool("a", "192.0.2.0/30")
    assert alloc.set_pools([smaller_a]) == ["ns/2", "ns/3"]
    assert alloc.ips_of("ns/3") == [ip("192.0.2.7")]  # kept, never renumbered
    assert alloc.pool_of(ip("192.0.2.7")) is None and alloc.pool_of(ip("192.0.2.0")) == "a"
    assert alloc.pools == {"a": smaller_a}
    assert alloc.usage("a") == {4: (4, 1)}
    with pytest.raises(KeyError):
        alloc.usage("b")
    alloc.pools.clear()  # a copy: the allocator's pools stay
    assert alloc.pools == {"a": smaller_a}
    assert alloc.set_pools([a, b]) == []


def test_set_pools_rejects_duplicate_names():
    with pytest.raises(ValueError, match="two pools are named 'a'"):
        Allocator([pool("a", "192.0.2.1"), pool("a", "192.0.2.2")])


def test_pool_of_picks_the_first_pool_by_name():
    alloc = Allocator([pool("z", "192.0.2.0/29"), pool("m", "192.0.2.4-192.0.2.5")])
    assert alloc.pool_of(ip("192.0.2.4")) == "m"
    assert alloc.pool_of(ip("192.0.2.1")) == "z"
    assert alloc.assign(svc("ns/1"), ip("192.0.2.4")) == "m"
    assert alloc.usage("z") == {4: (8, 1)} and alloc.usage("m") == {4: (2, 1)}


def test_usage_after_avoid_buggy_is_switched_on():
    alloc = Allocator([pool("a", "192.0.2.0/29")])
    alloc.assign(svc("ns/1"), ip("192.0.2.0"))
    alloc.assign(svc("ns/2"), ip("192.0.2.1"))
    assert alloc.set_pools([pool("a", "192.0.2.0/29", avoidBuggyIPs=True)]) == ["ns/1"]
    assert alloc.usage("a") == {4: (7, 1)}


def test_a_slash_64_with_thousands_of_allocations_is_fast():
    big = pool("big", "2001:db8::/64")
    alloc = Allocator([big])
    start = time.perf_counter()
    for i in range(3000):
        alloc.allocate(svc(f"ns/{i}"), 6, [big])
    alloc.release("ns/1500")
    assert alloc.allocate(svc("ns/again"), 6, [big]) == (ip("2001:db8::5dc"), "big")
    assert alloc.usage("big") == {6: (2 ** 64, 3000)}
    assert time.perf_counter() - start < 2.0


def test_a_buggy_pool_fills_in_order_across_slash_24s():
    wide = pool("wide", "203.0.113.0/24", "192.0.2.0/24", "198.51.100.0/24", avoidBuggyIPs=True)
    alloc = Allocator([wide])
    start = time.perf_counter()
    got = [alloc.allocate(svc(f"ns/{i}"), 4, [wide])[0] for i in range(762)]
    assert got == list(wide.addresses(4))
    assert alloc.usage("wide") == {4: (762, 762)}
    with pytest.raises(AllocationError):
        alloc.allocate(svc("ns/one-too-many"), 4, [wide])
    assert time.perf_counter() - start < 2.0


def test_adopt_keeps_an_ip_outside_every_pool_and_refuses_conflicts():
    import ipaddress as _ip

    from leifur.ipam.allocator import TAKEN, AllocationError, Allocator
    from leifur.ipam.pool import parse_pool
    from leifur.model.service import ServiceTraits

    alloc = Allocator([parse_pool("p", {"addresses": ["192.0.2.0/30"]})])
    a, b = ServiceTraits("ns/a", ports=frozenset({("TCP", 80)})), ServiceTraits("ns/b", ports=frozenset({("TCP", 80)}))
    outside = _ip.ip_address("198.51.100.9")
    assert alloc.adopt(a, outside) is None
    assert alloc.ips_of("ns/a") == [outside]
    assert alloc.set_pools(alloc.pools.values()) == ["ns/a"]
    try:
        alloc.adopt(b, outside)
    except AllocationError as e:
        assert e.reason == TAKEN and "ns/a" in str(e)
    else:
        raise AssertionError("a second holder was adopted")
    inside = alloc.allocate(a, 4, list(alloc.pools.values()))[0]
    # One IP per family: taking a pool address replaced the adopted one.
    assert alloc.ips_of("ns/a") == [inside]


def test_release_ip_frees_one_family_only():
    import ipaddress as _ip

    from leifur.ipam.allocator import Allocator
    from leifur.ipam.pool import parse_pool
    from leifur.model.service import ServiceTraits

    alloc = Allocator([parse_pool("p", {"addresses": ["192.0.2.0/30", "2001:db8::/126"]})])
    t = ServiceTraits("ns/a")
    pools = list(alloc.pools.values())
    v4, _ = alloc.allocate(t, 4, pools)
    v6, _ = alloc.allocate(t, 6, pools)
    assert alloc.release_ip("ns/a", _ip.ip_address("192.0.2.3")) is False
    assert alloc.release_ip("ns/a", v4) is True
    assert alloc.ips_of("ns/a") == [v6]
    assert alloc.usage("p")[4] == (4, 0) and alloc.usage("p")[6] == (4, 1)
