"""The lab router's readers and configuration: birdc's text (BIRD 2.0.12, recorded from the
lab) parsed into paths, sessions and BFD states; bird.conf rendered from the options."""

from __future__ import annotations

import pytest

from leifur_dev import bird

ROUTES = """BIRD 2.0.12 ready.
Access restricted
Table master6:
2001:db8::28/128     unicast [node1 17:11:08.749 from 192.0.2.11] * (100) [AS64512i]
\tvia 2001:db8::11 on eth0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64512
\tBGP.next_hop: 2001:db8::11 fe80::ff:fe00:1
\tBGP.local_pref: 150
\tBGP.community: (64512,7) (65000,1)
\tBGP.large_community: (64512, 1, 2)
                     unicast [node2 17:11:14.801 from 192.0.2.12] (100) [AS64512i]
\tvia 2001:db8::12 on eth0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.local_pref: 100
2001:db8::29/128     unicast [node2 17:11:15.000 from 192.0.2.12] * (100) [AS64512i]
\tvia 2001:db8::12 on eth0
\tType: BGP univ
"""

PROTOCOLS = """BIRD 2.0.12 ready.
Access restricted
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     2026-12-02 17:10:13
node1      BGP        ---        up     2026-12-02 17:11:07  Established
  BGP state:          Established
    Neighbor address: 192.0.2.11
    Neighbor AS:      64512
  Channel ipv4
    State:          UP
node2      BGP        ---        start  2026-12-02 17:11:07  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: 192.0.2.12
"""

BFD = """BIRD 2.0.12 ready.
Access restricted
bfd1:
IP address                Interface  State      Since         Interval  Timeout
192.0.2.11                eth0       Up         2026-12-02 17:10:17    0.300    0.900
2001:db8::12              eth0       Down       2026-12-02 17:10:18    1.000    0.000
"""


def test_routes_are_parsed_into_one_path_per_node_with_their_attributes():
    routes = bird.parse_routes(ROUTES)
    assert sorted(routes) == ["2001:db8::28/128", "2001:db8::29/128"]
    first, second = routes["2001:db8::28/128"]
    assert (first.protocol, first.next_hops, first.best) == ("node1", ("2001:db8::11",), True)
    assert (second.protocol, second.next_hops, second.best) == ("node2", ("2001:db8::12",), False)
    assert first.local_pref == 150 and second.local_pref == 100
    assert first.communities == {"64512:7", "65000:1"} and second.communities == set()
    assert first.large_communities == {"64512:1:2"} and second.large_communities == set()
    assert [p.protocol for p in routes["2001:db8::29/128"]] == ["node2"]


def test_no_route_is_no_path():
    assert bird.parse_routes("BIRD 2.0.12 ready.\nAccess restricted\nNetwork not found\n") == {}


def test_protocols_give_each_bgp_session_its_state_and_neighbour():
    protocols = bird.parse_protocols(PROTOCOLS)
    assert protocols["node1"] == {"proto": "BGP", "state": "up", "bgp_state": "Established",
                                  "neighbor": "192.0.2.11"}
    assert protocols["node2"]["bgp_state"] == "Active"
    assert protocols["device1"] == {"proto": "Device", "state": "up"}


def test_bfd_sessions_by_peer_address():
    assert bird.parse_bfd_sessions(BFD) == {"192.0.2.11": "Up", "2001:db8::12": "Down"}


@pytest.mark.parametrize("routes, want", [
    pytest.param([], [], id="no route"),
    pytest.param([{"dst": "192.0.2.40", "gateway": "192.0.2.11", "dev": "eth0"}], ["192.0.2.11"], id="one path"),
    pytest.param([{"dst": "192.0.2.40", "nexthops": [{"gateway": "192.0.2.12", "dev": "eth0"},
                                                      {"gateway": "192.0.2.11", "dev": "eth0"}]}],
                 ["192.0.2.11", "192.0.2.12"], id="multipath"),
])
def test_kernel_next_hops(routes, want):
    assert bird.multipath_next_hops(routes) == want


@pytest.mark.parametrize("config, present, absent", [
    pytest.param(bird.RouterConfig(), ["local 192.0.2.2 as 64500;", "neighbor 192.0.2.11 as 64512;",
                                       "merge paths on;", "import all; export none;", "graceful restart off;"],
                 ["bfd on;", "password", "hold time", "protocol bfd"], id="defaults: eBGP, nothing else"),
    pytest.param(bird.RouterConfig(router_asn=65000, node_asn=65000), ["local 192.0.2.2 as 65000;",
                                                                       "neighbor 192.0.2.11 as 65000;", "direct;"],
                 [], id="iBGP"),
    pytest.param(bird.RouterConfig(bfd=bird.BFDTimers(200, 300, 5), graceful_restart=True, hold_time=9,
                                   password="s3cret"),
                 ["bfd on;", "min rx interval 200 ms; min tx interval 300 ms; multiplier 5;",
                  "graceful restart on;", "hold time 9;", 'password "s3cret";'], [], id="every option"),
])
def test_router_config(config, present, absent):
    text = bird.render(config, "192.0.2.2", {"node1": "192.0.2.11", "node2": "192.0.2.12"})
    assert "router id 192.0.2.2;" in text
    assert all(p in text for p in present), text
    assert not any(a in text for a in absent), text
    assert text.count("protocol bgp ") == 2


def test_ipv6_sessions_carry_ipv6_only_from_the_routers_ipv6_address():
    config = bird.RouterConfig(session_family=6)
    text = bird.render(config, "192.0.2.2", {"node1": "2001:db8::11"}, local="2001:db8::2")
    assert "router id 192.0.2.2;" in text and "local 2001:db8::2 as 64500;" in text
    assert "neighbor 2001:db8::11 as 64512;" in text
    assert "ipv6 { import all; export none; };" in text and "ipv4 { import all" not in text
