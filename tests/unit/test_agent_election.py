"""Election is deterministic, moves as few IPs as possible, and honours eligibility."""

from __future__ import annotations

import collections
import ipaddress
import json
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from leifur.announce import election
from leifur.announce.election import Advertisement, Node
from leifur.announce.interfaces import Lost
from leifur.model import names

NODES = [f"node{i}" for i in range(1, 6)]
IPS = [f"203.0.113.{i}" for i in range(256)] + [f"2001:db8::{i:x}" for i in range(256)]


def test_weights_are_the_same_in_another_process():
    here = [election.owner(NODES, ip) for ip in IPS[:50]]
    code = ("from leifur.announce import election; import json, sys; nodes, ips = json.loads(sys.argv[1]); "
            "print(json.dumps([election.owner(nodes, ip) for ip in ips]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps([NODES, IPS[:50]])],
                         capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"})
    assert json.loads(out.stdout) == here


def test_owners_spread_over_nodes():
    counts = collections.Counter(election.owner(NODES, ip) for ip in IPS)
    assert set(counts) == set(NODES)
    # 512 IPs over 5 nodes: about 102 each; a hash that clumped would fall far outside this.
    assert all(60 <= c <= 150 for c in counts.values()), counts


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(NODES), min_size=2), st.sampled_from(IPS), st.sampled_from(NODES))
def test_a_node_leaving_moves_only_its_own_ips(nodes, ip, leaving):
    before = election.owner(nodes, ip)
    after = election.owner(nodes - {leaving}, ip)
    if before != leaving:
        assert after == before
    else:
        # The next in rank takes over: every agent knows the successor in advance.
        assert after == election.rank(nodes, ip)[1]


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(NODES), min_size=1), st.sampled_from(IPS), st.sampled_from(NODES))
def test_a_node_joining_takes_an_ip_or_changes_nothing(nodes, ip, joining):
    after = election.owner(nodes | {joining}, ip)
    assert after in (election.owner(nodes, ip), joining)


def test_no_node_no_owner():
    assert election.owner([], "203.0.113.1") is None


def ad(name="all", **spec) -> Advertisement:
    return election.parse_advertisement({"metadata": {"name": name}, "spec": spec})


def test_eligibility_alive_exclusion_label_selectors_and_local_policy():
    nodes = [
        Node("a", {"zone": "x"}),
        Node("b", {"zone": "y"}),
        Node("c", {"zone": "x", names.LABEL_EXCLUDE_LB: ""}),
        Node("d", {"zone": "x"}, alive=False),
    ]
    zone_x = ad("zx", ipAddressPools=["p"], nodeSelectors=[{"matchLabels": {"zone": "x"}}], interfaces=["eth1"])
    assert set(election.eligible(nodes, "p", {}, [ad()])) == {"a", "b"}
    assert set(election.eligible(nodes, "p", {}, [zone_x])) == {"a"}
    assert election.eligible(nodes, "other", {}, [zone_x]) == {}
    by_label = ad("lbl", ipAddressPoolSelectors=[{"matchLabels": {"tier": "edge"}}])
    assert set(election.eligible(nodes, "q", {"tier": "edge"}, [by_label])) == {"a", "b"}
    assert election.eligible(nodes, "q", {"tier": "core"}, [by_label]) == {}
    local = election.eligible(nodes, "p", {}, [ad()], local_traffic=True, ready_endpoint_nodes=["b", "c", "d"])
    assert set(local) == {"b"}


def test_elect_reports_interfaces_and_mode_and_skips_services_without_endpoints():
    nodes = [Node("a")]
    got = election.elect("203.0.113.9", nodes, "p", {}, [ad("one", interfaces=["eth1"]),
                                                         ad("two", interfaces=["eth2"], mode="Netlink")])
    assert got == election.Announcement("203.0.113.9", "a", ("eth1", "eth2"), "Netlink")
    assert election.elect("203.0.113.9", nodes, "p", {}, [ad()], ready_endpoint_nodes=[]) is None
    assert election.elect("203.0.113.9", nodes, "p", {}, []) is None
    assert election.elect("203.0.113.9", nodes, "p", {}, [ad()], ready_endpoint_nodes=["zzz"]).node == "a"


def test_a_node_that_lost_its_link_is_passed_over_unless_every_node_did():
    ip = "192.0.2.40"
    nodes = [Node(n) for n in NODES]
    first, second = election.rank(NODES, ip)[:2]
    lan = Lost((ipaddress.ip_network("192.0.2.0/26"),))
    elsewhere = Lost((ipaddress.ip_network("198.51.100.0/24"),))
    assert election.elect(ip, nodes, "p", {}, [ad()], lost={first: lan}).node == second
    assert election.elect(ip, nodes, "p", {}, [ad()], lost={first: elsewhere}).node == first
    # Named interfaces: the list the node would announce on decides, not the subnet.
    eth0 = Lost(named=(("eth0",),))
    assert election.elect(ip, nodes, "p", {}, [ad(interfaces=["eth0"])], lost={first: eth0}).node == second
    assert election.elect(ip, nodes, "p", {}, [ad(interfaces=["eth1"])], lost={first: eth0}).node == first
    # Nobody can: the first ranked is elected all the same, and says why it cannot announce.
    assert election.elect(ip, nodes, "p", {}, [ad()], lost=dict.fromkeys(NODES, lan)).node == first
