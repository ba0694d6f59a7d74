"""Pool parsing, counting and iteration: CIDRs, ranges, single addresses, buggy IPs, overlaps."""

from __future__ import annotations

import ipaddress
import time

import pytest

from leifur.ipam.pool import AddressRange, Pool, PoolError, find_overlaps, parse_address_entry, parse_pool
from leifur.ipam.selectors import ServiceAllocation

ip = ipaddress.ip_address


@pytest.mark.parametrize(("entry", "first", "last", "text"), [
    ("192.0.2.0/28", "192.0.2.0", "192.0.2.15", "192.0.2.0/28"),
    ("2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"),
    ("192.0.2.10-192.0.2.20", "192.0.2.10", "192.0.2.20", "192.0.2.10-192.0.2.20"),
    (" 192.0.2.10 - 192.0.2.20 ", "192.0.2.10", "192.0.2.20", "192.0.2.10-192.0.2.20"),
    ("2001:db8::10-2001:db8::1f", "2001:db8::10", "2001:db8::1f", "2001:db8::10/124"),
    ("192.0.2.7", "192.0.2.7", "192.0.2.7", "192.0.2.7/32"),
    ("2001:db8::7", "2001:db8::7", "2001:db8::7", "2001:db8::7/128"),
    ("192.0.2.0-192.0.2.255", "192.0.2.0", "192.0.2.255", "192.0.2.0/24"),
])
def test_entries_of_both_families(entry, first, last, text):
    r = parse_address_entry(entry)
    assert (r.first, r.last) == (ip(first), ip(last))
    assert r.version == ip(first).version
    assert r.size == int(ip(last)) - int(ip(first)) + 1
    assert str(r) == text
    assert parse_address_entry(str(r)) == r  # the readable form parses back to the same range


def test_range_membership_and_size():
    r = parse_address_entry("192.0.2.10-192.0.2.20")
    assert r.size == 11
    assert ip("192.0.2.10") in r and ip("192.0.2.20") in r
    assert ip("192.0.2.9") not in r and ip("192.0.2.21") not in r
    assert ip("::ffff:192.0.2.10") not in r  # another family is never inside
    assert parse_address_entry("2001:db8::/32").size == 2 ** 96


@pytest.mark.parametrize(("entry", "fragments"), [
    ("192.0.2.1/24", ["'192.0.2.1/24'", "host bits", "192.0.2.0/24"]),
    ("2001:db8::1/64", ["host bits", "2001:db8::/64"]),
    ("192.0.2.20-192.0.2.10", ["starts after it ends", "192.0.2.10-192.0.2.20"]),
    ("192.0.2.1-2001:db8::1", ["mixes IPv4 and IPv6"]),
    ("192.0.2.0/33", ["'192.0.2.0/33'", "not a valid CIDR"]),
    ("192.0.2.1-", ["not a range"]),
    ("192.0.2.1-192.0.2.2-192.0.2.3", ["not a range"]),
    ("192.0.2.0/24-192.0.2.255", ["cannot contain a CIDR"]),
    ("192.0.2.256", ["'192.0.2.256'", "not a CIDR", "a range", "IP address"]),
    ("pool-a", ["'pool-a'", "is not an IPv4 or IPv6 address"]),
    ("", ["empty"]),
    ("fe80::1%eth0", ["zone"]),
])
def test_malformed_entries_say_what_is_wrong(entry, fragments):
    with pytest.raises(PoolError) as err:
        parse_address_entry(entry)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_non_string_entry():
    with pytest.raises(PoolError, match="must be a string"):
        parse_address_entry(24)  # type: ignore[arg-type]


def test_address_range_rejects_reversed_and_mixed():
    with pytest.raises(PoolError, match="starts after it ends"):
        AddressRange(ip("192.0.2.2"), ip("192.0.2.1"))
    with pytest.raises(PoolError, match="mixes"):
        AddressRange(ip("192.0.2.2"), ip("2001:db8::1"))


def test_parse_pool_defaults_and_fields():
    pool = parse_pool("p", {"addresses": ["192.0.2.0/28", "2001:db8::/120"]})
    assert pool.name == "p" and pool.auto_assign is True and pool.avoid_buggy_ips is False
    assert pool.allocation is None
    assert pool.families() == {4, 6}
    assert pool.size(4) == 16 and pool.size(6) == 256
    pool = parse_pool("q", {"addresses": ["192.0.2.0/28"], "autoAssign": False, "avoidBuggyIPs": True,
                            "serviceAllocation": {"priority": 5, "namespaces": ["a"]}})
    assert pool.auto_assign is False and pool.avoid_buggy_ips is True
    assert pool.allocation == ServiceAllocation(priority=5, namespaces=frozenset({"a"}))
    assert pool.families() == {4} and pool.size(6) == 0 and list(pool.addresses(6)) == []


def test_parse_pool_reports_every_problem_at_once():
    spec = {
        "addresses": ["192.0.2.0/24", "192.0.2.10-192.0.2.20", "nonsense", "198.51.100.1/24"],
        "autoAssign": "yes",
        "avoidBuggyIPs": 1,
        "serviceAllocation": {"priority": "high", "serviceSelectors": [{"matchLabels": {"app": 3}}]},
    }
    with pytest.raises(PoolError) as err:
        parse_pool("web", spec)
    message = str(err.value)
    assert message.startswith("IPAddressPool 'web': ")
    assert len(err.value.problems) == 7
    assert message.count("; ") >= 6
    for fragment in ["spec.addresses[0] '192.0.2.0/24' overlaps spec.addresses[1] '192.0.2.10-192.0.2.20'",
                     "spec.addresses[2]: 'nonsense'", "did you mean 198.51.100.0/24", "spec.autoAssign",
                     "spec.avoidBuggyIPs", "priority", "serviceSelectors[0].matchLabels"]:
        assert fragment in message


@pytest.mark.parametrize(("spec", "fragment"), [
    ({}, "spec.addresses is required"),
    ({"addresses": []}, "spec.addresses is empty"),
    ({"addresses": "192.0.2.0/24"}, "must be a list"),
    ({"addresses": ["192.0.2.1", "192.0.2.1"]}, "overlaps"),
    ({"addresses": ["2001:db8::/64", "2001:db8::ff"]}, "overlaps"),
    ({"addresses": ["192.0.2.1"], "serviceAllocation": "all"}, "spec.serviceAllocation must be an object"),
    ({"addresses": ["192.0.2.1"], "serviceAllocation": {"namespaces": "default"}}, "namespaces must be a list"),
])
def test_parse_pool_rejects(spec, fragment):
    with pytest.raises(PoolError, match="IPAddressPool 'p'") as err:
        parse_pool("p", spec)
    assert fragment in str(err.value)


def test_parse_pool_rejects_non_dict_spec():
    with pytest.raises(PoolError, match="spec must be an object"):
        parse_pool("p", ["192.0.2.0/24"])  # type: ignore[arg-type]


def test_adjacent_ranges_are_not_overlaps():
    pool = parse_pool("p", {"addresses": ["192.0.2.0/25", "192.0.2.128-192.0.2.255"]})
    assert pool.size(4) == 256


def test_pool_constructor_refuses_overlapping_ranges():
    with pytest.raises(PoolError, match="overlaps"):
        Pool("p", (parse_address_entry("192.0.2.0/28"), parse_address_entry("192.0.2.15")))


def test_avoid_buggy_ips_on_a_slash_24():
    pool = parse_pool("p", {"addresses": ["192.0.2.0/24"], "avoidBuggyIPs": True})
    addrs = list(pool.addresses(4))
    assert pool.size(4) == len(addrs) == 254
    assert addrs[0] == ip("192.0.2.1") and addrs[-1] == ip("192.0.2.254")
    assert not pool.contains(ip("192.0.2.0")) and not pool.contains(ip("192.0.2.255"))
    assert pool.contains(ip("192.0.2.1"))
    plain = parse_pool("p", {"addresses": ["192.0.2.0/24"]})
    assert plain.size(4) == 256 and plain.contains(ip("192.0.2.0")) and plain.contains(ip("192.0.2.255"))


@pytest.mark.parametrize("entry", [
    "192.0.2.250-192.0.4.5",  # spans three /24s
    "192.0.2.255-192.0.3.0",  # nothing but buggy addresses
    "192.0.2.0",
    "192.0.2.1-192.0.2.254",
    "0.0.0.0-0.0.1.0",  # the lower edge of the address space
    "255.255.254.200-255.255.255.255",  # and the upper one
])
def test_avoid_buggy_counting_matches_iteration(entry):
    pool = parse_pool("p", {"addresses": [entry], "avoidBuggyIPs": True})
    r = parse_address_entry(entry)
    brute = [a for a in (ipaddress.IPv4Address(v) for v in range(int(r.first), int(r.last) + 1))
             if int(a) % 256 not in (0, 255)]
    assert list(pool.addresses(4)) == brute
    assert pool.size(4) == len(brute)
    assert all(pool.contains(a) for a in brute)


def test_avoid_buggy_does_not_touch_ipv6():
    pool = parse_pool("p", {"addresses": ["2001:db8::ff-2001:db8::100"], "avoidBuggyIPs": True})
    assert pool.size(6) == 2
    assert list(pool.addresses(6)) == [ip("2001:db8::ff"), ip("2001:db8::100")]
    assert pool.contains(ip("2001:db8::ff"))


def test_addresses_follow_range_order_and_are_lazy():
    pool = parse_pool("p", {"addresses": ["198.51.100.7", "192.0.2.1-192.0.2.2", "2001:db8::/32"]})
    assert [str(a) for a in pool.addresses(4)] == ["198.51.100.7", "192.0.2.1", "192.0.2.2"]
    v6 = pool.addresses(6)
    assert [next(v6), next(v6)] == [ip("2001:db8::"), ip("2001:db8::1")]


def test_huge_ipv6_pools_are_counted_arithmetically():
    start = time.perf_counter()
    pool = parse_pool("p", {"addresses": ["2001:db8::/64", "2001:db9::/32"]})
    assert pool.size(6) == 2 ** 64 + 2 ** 96
    assert pool.contains(ip("2001:db9:ffff:ffff:ffff:ffff:ffff:ffff"))
    assert not pool.contains(ip("2001:db8:0:1::"))
    assert time.perf_counter() - start < 0.1


def test_overlaps_across_pools():
    pools = [
        parse_pool("a", {"addresses": ["192.0.2.0/24", "2001:db8::/64"]}),
        parse_pool("b", {"addresses": ["192.0.2.128/25"]}),
        parse_pool("c", {"addresses": ["2001:db8::ff"]}),
        parse_pool("d", {"addresses": ["198.51.100.0/24"]}),
        parse_pool("e", {"addresses": ["192.0.2.255-192.0.3.10"]}),
        parse_pool("f", {"addresses": ["192.0.3.11"]}),  # adjacent to e, not overlapping
    ]
    assert find_overlaps(pools) == {"a": ["b", "c", "e"], "b": ["a", "e"], "c": ["a"], "e": ["a", "b"]}
    assert find_overlaps(pools[3:4]) == {}
    assert find_overlaps([]) == {}


def test_overlaps_are_symmetric_and_match_pairwise_check():
    # Many small pools: the sweep must agree with the obvious quadratic definition.
    pools = [parse_pool(f"p{i}", {"addresses": [f"192.0.2.{(i * 7) % 200}-192.0.2.{(i * 7) % 200 + i % 5}"]})
             for i in range(60)]
    expected: dict[str, list[str]] = {}
    for a in pools:
        others = sorted(b.name for b in pools if b is not a and a.ranges[0].overlaps(b.ranges[0]))
        if others:
            expected[a.name] = others
    assert expected  # the layout does produce overlaps
    assert find_overlaps(pools) == expected


def test_find_overlaps_is_fast_with_many_ranges():
    pools = [Pool(f"p{i}", tuple(AddressRange(ipaddress.IPv6Address((i << 80) + (j << 16)),
                                              ipaddress.IPv6Address((i << 80) + (j << 16) + 0xFFFF))
                                 for j in range(200)))
             for i in range(50)]
    pools.append(Pool("wide", (AddressRange(ipaddress.IPv6Address(5 << 80), ipaddress.IPv6Address(6 << 80)),)))
    start = time.perf_counter()
    assert find_overlaps(pools) == {"p5": ["wide"], "p6": ["wide"], "wide": ["p5", "p6"]}
    assert time.perf_counter() - start < 1.0
