"""Which interfaces announce an IP: named ones, else the node's interface in the IP's subnet,
never a veth, bridge slave, NOARP, down or loopback interface unless named."""

from __future__ import annotations

import ipaddress

import pytest

from leifur.announce.interfaces import Link, Lost, explain_no_interface, lost, select_interfaces


def link(name: str, *addrs: str, kind: str = "", bridge_slave: bool = False, noarp: bool = False,
         up: bool = True, loopback: bool = False, index: int = 2) -> Link:
    return Link(name=name, index=index, mac="02:00:00:00:00:01", kind=kind, bridge_slave=bridge_slave,
                noarp=noarp, up=up, loopback=loopback, networks=tuple(ipaddress.ip_interface(a) for a in addrs))


LO = link("lo", "127.0.0.1/8", "::1/128", loopback=True, index=1)
ETH0 = link("eth0", "192.0.2.10/26", "2001:db8:0:1::10/64", "fe80::1/64")
ETH1 = link("eth1", "198.51.100.5/24")


def test_unnamed_picks_the_interface_whose_subnet_contains_the_ip():
    links = [LO, ETH0, ETH1]
    assert select_interfaces("192.0.2.40", links) == ("eth0",)
    assert select_interfaces("198.51.100.77", links) == ("eth1",)
    assert select_interfaces("2001:db8:0:1::40", links) == ("eth0",)


def test_the_subnet_counts_not_the_host_address():
    # 192.0.2.63 is in 192.0.2.0/26 (eth0), 192.0.2.64 is not.
    assert select_interfaces("192.0.2.63", [ETH0]) == ("eth0",)
    assert select_interfaces("192.0.2.64", [ETH0]) == ()


def test_families_do_not_mix():
    v4only = link("eth0", "192.0.2.10/26")
    assert select_interfaces("2001:db8:0:1::40", [v4only]) == ()
    # An IPv4-looking match cannot come from an IPv6 network and vice versa.
    v6only = link("eth0", "::/0")
    assert select_interfaces("192.0.2.40", [v6only]) == ()


def test_link_local_ipv6_does_not_count():
    only_ll = link("eth0", "fe80::1/64")
    assert select_interfaces("fe80::40", [only_ll]) == ()
    assert "no IPv6 address" in explain_no_interface("fe80::40", [only_ll])


def test_several_matching_interfaces_are_all_chosen_sorted():
    a = link("eth1", "192.0.2.11/26", index=3)
    b = link("bond0", "192.0.2.0/24", kind="bond", index=4)
    assert select_interfaces("192.0.2.40", [ETH0, a, b]) == ("bond0", "eth0", "eth1")


@pytest.mark.parametrize("excluded, reason", [
    (link("eth0", "192.0.2.10/26", kind="veth"), "a veth"),
    (link("eth0", "192.0.2.10/26", bridge_slave=True), "a bridge slave"),
    (link("eth0", "192.0.2.10/26", noarp=True), "NOARP"),
    (link("eth0", "192.0.2.10/26", up=False), "down"),
    (link("lo", "192.0.2.10/26", loopback=True), "the loopback"),
])
def test_excluded_interfaces_are_not_chosen_and_the_reason_says_why(excluded, reason):
    assert select_interfaces("192.0.2.40", [excluded]) == ()
    why = explain_no_interface("192.0.2.40", [excluded])
    assert excluded.name in why and reason in why and "192.0.2.40" in why
    assert "192.0.2.10/26" in why
    assert "\n" not in why


def test_the_hint_to_name_an_interface_only_when_naming_would_help():
    veth = link("eth0", "192.0.2.10/26", kind="veth")
    assert "name it in the L2Advertisement's interfaces" in explain_no_interface("192.0.2.40", [veth])
    down = link("eth0", "192.0.2.10/26", up=False)
    assert "name it" not in explain_no_interface("192.0.2.40", [down])


def test_a_usable_interface_wins_over_excluded_ones():
    bridge = link("br0", "192.0.2.10/26", kind="bridge", index=3)
    slave = link("eth0", "192.0.2.11/26", bridge_slave=True)
    veth = link("veth9", "192.0.2.12/26", kind="veth", index=4)
    links = [slave, bridge, veth]
    assert select_interfaces("192.0.2.40", links) == ("br0",)
    assert explain_no_interface("192.0.2.40", links) == ""


@pytest.mark.parametrize("anything", [
    link("veth0", kind="veth"),
    link("eth0", bridge_slave=True),
    link("tun0", noarp=True),
    link("lo", loopback=True),
    link("eth9", "198.51.100.5/24"),  # named wins over the subnet rule
])
def test_a_named_interface_may_be_anything_that_is_up(anything):
    assert select_interfaces("192.0.2.40", [ETH0, anything], named=[anything.name]) == (anything.name,)


def test_named_are_sorted_deduplicated_and_only_those_that_exist_and_are_up():
    down = link("eth2", up=False)
    links = [ETH0, ETH1, down]
    assert select_interfaces("192.0.2.40", links, named=["eth1", "eth0", "eth1", "eth2", "eth7"]) == ("eth0", "eth1")


def test_named_but_missing_or_down_is_explained():
    down = link("eth2", up=False)
    links = [LO, ETH0, down]
    assert select_interfaces("192.0.2.40", links, named=["eth7", "eth2"]) == ()
    why = explain_no_interface("192.0.2.40", links, named=["eth7", "eth2"])
    assert "eth7 does not exist on this node" in why
    assert "eth2 is down" in why
    assert "eth0" in why  # what does exist, so a typo is easy to spot


def test_no_subnet_match_lists_the_addresses_the_node_has():
    why = explain_no_interface("203.0.113.7", [LO, ETH0, ETH1])
    assert "203.0.113.7" in why and "eth0 192.0.2.10/26" in why and "eth1 198.51.100.5/24" in why
    assert "127.0.0.1" not in why
    why6 = explain_no_interface("2001:db8:9::1", [LO, ETH0])
    assert "2001:db8:0:1::10/64" in why6 and "fe80" not in why6


def test_bad_input_never_raises():
    assert select_interfaces("not-an-ip", [ETH0]) == ()
    assert "not an IP address" in explain_no_interface("not-an-ip", [ETH0])
    assert select_interfaces("192.0.2.40", []) == ()
    assert explain_no_interface("192.0.2.40", [])


# What a node lost to its down links, as its peers elect around it (interfaces.lost / Lost.blocks).
# Each case: the links, the L2Advertisements' interface lists, the subnets and lists lost.
LOST_CASES = {
    "all up: nothing lost": ([ETH0, ETH1], [["eth0"]], [], []),
    "the only link in a subnet without carrier: its subnets": (
        [link("eth0", "192.0.2.10/26", "2001:db8:0:1::10/64", "fe80::1/64", up=False), ETH1], [],
        ["192.0.2.0/26", "2001:db8:0:1::/64"], []),
    "another link up in the same subnet: nothing": (
        [link("eth0", "192.0.2.10/26", up=False), link("eth1", "192.0.2.11/26", index=3)], [], [], []),
    "an up link in a wider subnet covers it": (
        [link("eth0", "192.0.2.10/26", up=False), link("bond0", "192.0.2.1/24", kind="bond", index=3)], [], [], []),
    "an up link in a narrower subnet leaves the rest lost": (
        [link("eth0", "192.0.2.10/26", up=False), link("eth1", "192.0.2.1/28", index=3)], [],
        ["192.0.2.16/28", "192.0.2.32/27"], []),
    "an up veth does not cover it": (
        [link("eth0", "192.0.2.10/26", up=False), link("veth1", "192.0.2.11/26", kind="veth", index=3)], [],
        ["192.0.2.0/26"], []),
    "a down link that could not announce anyway: nothing": (
        [link("eth0", "192.0.2.10/26", up=False, noarp=True),
         link("br-port", "192.0.2.11/26", up=False, bridge_slave=True, index=3)], [], [], []),
    "a named list whose only interface is down": (
        [link("eth0", "192.0.2.10/26", up=False), ETH1], [["eth0"], ["eth1"], ["eth0", "eth1"]],
        ["192.0.2.0/26"], [("eth0",)]),
    "a named list with another interface up, or none down but absent: not lost": (
        [link("eth0", up=False), link("eth2", index=3)], [["eth0", "eth2"], ["bond0"]], [], []),
}


@pytest.mark.parametrize("name", list(LOST_CASES))
def test_what_down_links_lose(name):
    links, named, subnets, lists = LOST_CASES[name]
    lost_ = lost(links, named)
    assert lost_.subnets == tuple(ipaddress.ip_network(s) for s in subnets)
    assert lost_.named == tuple(lists)
    # Never more than the node really lost: whatever it blocks, select_interfaces finds nothing for.
    for ip in ["192.0.2.5", "192.0.2.12", "192.0.2.20", "192.0.2.40", "198.51.100.77", "2001:db8:0:1::40"]:
        for n in [[], *named]:
            if lost_.blocks(ip, n):
                assert select_interfaces(ip, links, n) == (), (ip, n)


def test_lost_blocks_by_subnet_and_by_named_list():
    lost_ = Lost((ipaddress.ip_network("192.0.2.0/26"),), (("eth0",),))
    assert lost_.blocks("192.0.2.40")
    assert not lost_.blocks("192.0.2.64")
    assert not lost_.blocks("2001:db8::1")
    assert lost_.blocks("198.51.100.1", ["eth0"])  # named: the list decides, not the subnet
    assert not lost_.blocks("192.0.2.40", ["eth0", "eth1"])
    assert not Lost()


@pytest.mark.parametrize("raw", [
    "x", {"subnets": "192.0.2.0/26"}, {"subnets": ["nonsense"]}, {"subnets": [1]}, {"interfaces": [[]]},
    {"interfaces": ["eth0"]}, {"interfaces": [[1]]},
    {"subnets": ["192.0.2.1/24"]},  # host bits: not a subnet anyone sends
], ids=repr)
def test_a_malformed_lost_is_refused(raw):
    assert Lost.from_dict(raw) is None


def test_lost_survives_the_wire_and_the_record():
    lost_ = Lost((ipaddress.ip_network("192.0.2.0/26"), ipaddress.ip_network("2001:db8::/64")), (("eth0", "eth1"),))
    assert Lost.from_dict(lost_.as_dict()) == lost_
