"""Which nodes advertise which IPs to which BGP peers, with what attributes. Pure."""

from __future__ import annotations

import pytest
from test_agent_plan import POOL, node, slice_, svc

from leifur.announce import bgp_plan, plan
from leifur.announce.bgp_intent import BFD, Route, SecretRef
from leifur.model import names

V6_POOL = {"metadata": {"name": "v6", "labels": {"tier": "b"}}, "spec": {"addresses": ["2001:db8:1::/120"]}}
NODES = [node("n1", rack="a"), node("n2", rack="a"), node("n3", rack="b")]


def peer(name: str, address: str = "203.0.113.1", my_asn: int = 64512, peer_asn: int = 64500, **spec) -> dict:
    return {"metadata": {"name": name},
            "spec": {"peerAddress": address, "myASN": my_asn, "peerASN": peer_asn, **spec}}


def adv(name: str, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": spec}


def cluster(services, slices=None, nodes=NODES, peers=None, ads=None, bfd=(), pools=(POOL, V6_POOL)) -> plan.Cluster:
    peers = [peer("r1")] if peers is None else peers
    ads = [adv("all")] if ads is None else ads
    if slices is None:
        slices = [slice_(s["metadata"]["name"], ["n1", "n2", "n3"]) for s in services]
    return plan.Cluster(list(services), list(slices), list(nodes), list(pools), [],
                        peers=list(peers), bgp_advertisements=list(ads), bfd_profiles=list(bfd))


def advertisers(decision: bgp_plan.BGPDecision) -> set[tuple[str, str]]:
    return {(p.node, p.peer) for p in decision.paths}


ALL = {("n1", "r1"), ("n2", "r1"), ("n3", "r1")}

# name, services, slices (None: ready on every node), nodes, peers, ads -> (node, peer) pairs or the reason
CASES = [
    ("cluster policy: every node", [svc("web", ["192.0.2.40"])], None, NODES, [peer("r1")], [adv("all")], ALL),
    ("local policy: only nodes with a ready endpoint", [svc("web", ["192.0.2.40"], policy="Local")],
     [slice_("web", ["n2", "n3"])], NODES, [peer("r1")], [adv("all")], {("n2", "r1"), ("n3", "r1")}),
    ("local policy: a not-ready endpoint does not count", [svc("web", ["192.0.2.40"], policy="Local")],
     [slice_("web", ["n2"]), slice_("web", ["n3"], ready=False) | {"metadata": {
         "name": "web-y", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}}}],
     NODES, [peer("r1")], [adv("all")], {("n2", "r1")}),
    ("no ready endpoint: nobody", [svc("web", ["192.0.2.40"])], [slice_("web", ["n1"], ready=False)], NODES,
     [peer("r1")], [adv("all")], plan.NO_ENDPOINTS),
    ("not allocated by us: nobody", [svc("web", ["192.0.2.40"], pool=None)], None, NODES, [peer("r1")],
     [adv("all")], plan.OUTSIDE_POOLS),
    ("unusable address: nobody", [svc("web", ["224.0.0.5"])], None, NODES, [peer("r1")], [adv("all")],
     plan.UNUSABLE),
    ("no advertisement for the pool", [svc("web", ["192.0.2.40"])], None, NODES, [peer("r1")],
     [adv("v6-only", ipAddressPools=["v6"])], bgp_plan.NO_BGP_ADVERTISEMENT),
    ("advertisement by pool selector", [svc("web", ["192.0.2.40"])], None, NODES, [peer("r1")],
     [adv("tier-a", ipAddressPoolSelectors=[{"matchLabels": {"tier": "a"}}])], ALL),
    ("advertisement's node selector", [svc("web", ["192.0.2.40"])], None, NODES, [peer("r1")],
     [adv("rack-a", nodeSelectors=[{"matchLabels": {"rack": "a"}}])], {("n1", "r1"), ("n2", "r1")}),
    ("peer's node selector", [svc("web", ["192.0.2.40"])], None, NODES,
     [peer("r1", nodeSelectors=[{"matchLabels": {"rack": "b"}}])], [adv("all")], {("n3", "r1")}),
    ("advertisement names a peer", [svc("web", ["192.0.2.40"])], None, NODES,
     [peer("r1"), peer("r2", "203.0.113.2")], [adv("to-r2", peers=["r2"])],
     {("n1", "r2"), ("n2", "r2"), ("n3", "r2")}),
    ("two peers: each gets it", [svc("web", ["192.0.2.40"])], None, [node("n1")],
     [peer("r1"), peer("r2", "203.0.113.2")], [adv("all")], {("n1", "r1"), ("n1", "r2")}),
    ("excluded node: not it", [svc("web", ["192.0.2.40"])], None,
     [node("n1"), node("n2", **{names.LABEL_EXCLUDE_LB: ""})], [peer("r1")], [adv("all")], {("n1", "r1")}),
    ("no node selected", [svc("web", ["192.0.2.40"])], None, NODES, [peer("r1")],
     [adv("rack-c", nodeSelectors=[{"matchLabels": {"rack": "c"}}])], bgp_plan.NO_BGP_NODE),
    ("local policy: the endpoint's node is not selected", [svc("web", ["192.0.2.40"], policy="Local")],
     [slice_("web", ["n3"])], NODES, [peer("r1")], [adv("rack-a", nodeSelectors=[{"matchLabels": {"rack": "a"}}])],
     bgp_plan.NO_BGP_NODE),
    ("no peer selects the nodes", [svc("web", ["192.0.2.40"])], None, NODES,
     [peer("r1", nodeSelectors=[{"matchLabels": {"rack": "c"}}])], [adv("all")], bgp_plan.NO_BGP_PEER),
    ("no peers at all", [svc("web", ["192.0.2.40"])], None, NODES, [], [adv("all")], bgp_plan.NO_BGP_PEER),
    ("a broken peer is skipped, the others used", [svc("web", ["192.0.2.40"])], None, [node("n1")],
     [peer("bad", myASN=0), peer("r1")], [adv("all")], {("n1", "r1")}),
    ("a peer with another ASN of ours is dropped on the node", [svc("web", ["192.0.2.40"])], None, [node("n1")],
     [peer("a"), peer("b", "203.0.113.2", my_asn=64513)], [adv("all")], {("n1", "a")}),
    ("a second peer on the same address is dropped", [svc("web", ["192.0.2.40"])], None, [node("n1")],
     [peer("a"), peer("b")], [adv("all")], {("n1", "a")}),
]


@pytest.mark.parametrize("services,slices,nodes,peers,ads,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_who_advertises_an_ip_to_whom(services, slices, nodes, peers, ads, want):
    decision = next(iter(bgp_plan.decide_bgp(cluster(services, slices, nodes, peers, ads)).values()))
    if isinstance(want, str):
        assert decision.paths == () and decision.reason == want and decision.message
    else:
        assert advertisers(decision) == want and decision.reason == ""


# name, ads, ip -> the routes one node sends its one peer
ATTRIBUTE_CASES = [
    ("a host route without attributes", [adv("all")], "192.0.2.40", [Route("192.0.2.40/32")]),
    ("ipv6 host route", [adv("all")], "2001:db8:1::5", [Route("2001:db8:1::5/128")]),
    ("communities sorted numerically, large apart",
     [adv("all", communities=["65000:200", "65000:30", "large:1:2:3"])], "192.0.2.40",
     [Route("192.0.2.40/32", ("65000:30", "65000:200"), ("1:2:3",))]),
    ("local preference", [adv("all", localPref=150)], "192.0.2.40", [Route("192.0.2.40/32", local_preference=150)]),
    ("overlap: communities united, highest local preference",
     [adv("a", communities=["65000:1"], localPref=100), adv("b", communities=["65000:2"], localPref=200)],
     "192.0.2.40", [Route("192.0.2.40/32", ("65000:1", "65000:2"), (), 200)]),
    ("overlap with one preference unset keeps the other", [adv("a", localPref=120), adv("b")], "192.0.2.40",
     [Route("192.0.2.40/32", local_preference=120)]),
    ("aggregation length", [adv("agg", aggregationLength=24)], "192.0.2.40", [Route("192.0.2.0/24")]),
    ("ipv6 aggregation length", [adv("agg", aggregationLengthV6=64)], "2001:db8:1::5", [Route("2001:db8:1::/64")]),
    ("an aggregate and a host route from two advertisements",
     [adv("agg", aggregationLength=24, communities=["1:1"]), adv("host", communities=["2:2"])], "192.0.2.40",
     [Route("192.0.2.0/24", ("1:1",)), Route("192.0.2.40/32", ("2:2",))]),
]


@pytest.mark.parametrize("ads,ip,want", [c[1:] for c in ATTRIBUTE_CASES], ids=[c[0] for c in ATTRIBUTE_CASES])
def test_the_routes_a_node_sends_carry_the_advertisements_attributes(ads, ip, want):
    c = cluster([svc("web", [ip], pool="lan" if ":" not in ip else "v6")], nodes=[node("n1")], ads=ads)
    assert list(bgp_plan.node_intent(c, "n1").routes["r1"]) == want


def test_ips_aggregated_into_one_prefix_give_one_route_with_merged_attributes():
    ads = [adv("agg", aggregationLength=24, ipAddressPools=["lan"]),
           adv("extra", aggregationLength=24, communities=["65000:7"], localPref=300,
               ipAddressPoolSelectors=[{"matchLabels": {"tier": "a"}}])]
    c = cluster([svc("a", ["192.0.2.40"]), svc("b", ["192.0.2.41"])], nodes=[node("n1")], ads=ads)
    assert bgp_plan.node_intent(c, "n1").routes == {"r1": (Route("192.0.2.0/24", ("65000:7",), (), 300),)}


def test_a_dual_stack_service_is_advertised_in_both_families():
    s = svc("web", ["192.0.2.40", "2001:db8::41"])
    c = cluster([s], nodes=[node("n1")])
    assert [r.prefix for r in bgp_plan.node_intent(c, "n1").routes["r1"]] == ["192.0.2.40/32", "2001:db8::41/128"]


def test_a_shared_ip_needs_every_service_ready_and_intersects_local_nodes():
    a = svc("a", ["192.0.2.42"], policy="Local")
    b = svc("b", ["192.0.2.42"], policy="Local")
    both = bgp_plan.decide_bgp(cluster([a, b], [slice_("a", ["n1", "n2"]), slice_("b", ["n2", "n3"])]))
    assert advertisers(both["192.0.2.42"]) == {("n2", "r1")}
    one_unready = bgp_plan.decide_bgp(cluster([a, b], [slice_("a", ["n1"])]))
    assert one_unready["192.0.2.42"].reason == plan.NO_ENDPOINTS


def test_a_node_opens_sessions_with_every_peer_selecting_it_even_with_nothing_to_advertise():
    peers = [peer("r1", bfdProfile="fast", passwordSecret={"name": "pw", "namespace": "leifur-system"},
                  holdTime="9s", keepaliveTime="3s", ebgpMultiHop=True, sourceAddress="192.0.2.5", peerPort=1179),
             peer("r2", "2001:db8::1", nodeSelectors=[{"matchLabels": {"rack": "b"}}])]
    bfd = [{"metadata": {"name": "fast"}, "spec": {"receiveInterval": 100, "transmitInterval": 100}}]
    intent = bgp_plan.node_intent(cluster([], peers=peers, bfd=bfd), "n1")
    assert [s.peer for s in intent.sessions] == ["r1"] and intent.routes == {"r1": ()}
    s = intent.sessions[0]
    assert (s.address, s.my_asn, s.peer_asn, s.port, s.hold_time_s, s.keepalive_time_s, s.ebgp_multihop,
            s.source_address, s.password_secret) == ("203.0.113.1", 64512, 64500, 1179, 9, 3, True, "192.0.2.5",
                                                     SecretRef("leifur-system", "pw"))
    assert s.bfd == BFD("fast", receive_interval_ms=100, transmit_interval_ms=100)
    assert [x.peer for x in bgp_plan.node_intent(cluster([], peers=peers, bfd=bfd), "n3").sessions] == ["r1", "r2"]


def test_a_missing_bfd_profile_leaves_the_session_without_bfd_and_is_reported():
    c = cluster([], peers=[peer("r1", bfdProfile="nope")])
    assert bgp_plan.node_intent(c, "n1").sessions[0].bfd is None
    assert any(p.kind == bgp_plan.PEER and "nope" in p.message for p in bgp_plan.problems(c))


# name, node object -> router ID
ROUTER_ID_CASES = [
    ("the node's first IPv4 InternalIP",
     {"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "2001:db8::9"},
                                                           {"type": "ExternalIP", "address": "198.51.100.9"},
                                                           {"type": "InternalIP", "address": "192.0.2.9"}]}},
     [peer("r1")], "192.0.2.9"),
    ("a peer's routerID wins", {"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "192.0.2.9"}]}}, [peer("r1", routerID="10.0.0.1")], "10.0.0.1"),
    ("no IPv4 address: the daemon chooses", {"metadata": {"name": "n1"}}, [peer("r1")], ""),
]


@pytest.mark.parametrize("node_obj,peers,want", [c[1:] for c in ROUTER_ID_CASES], ids=[c[0] for c in ROUTER_ID_CASES])
def test_the_router_id(node_obj, peers, want):
    assert bgp_plan.node_intent(cluster([], nodes=[node_obj], peers=peers), "n1").router_id == want


def test_an_unknown_node_has_no_sessions():
    assert bgp_plan.node_intent(cluster([svc("web", ["192.0.2.40"])]), "elsewhere").sessions == ()


# name, peers, ads, pools -> the problems reported (kind, name, a word of the message)
PROBLEM_CASES = [
    ("nothing wrong", [peer("r1")], [adv("all")], [POOL], []),
    ("invalid ASN", [peer("r1", my_asn=0)], [adv("all")], [POOL], [(bgp_plan.PEER, "r1", "myASN")]),
    ("keepalive not below hold", [peer("r1", holdTime="30s", keepaliveTime="30s")], [adv("all")], [POOL],
     [(bgp_plan.PEER, "r1", "keepaliveTime")]),
    ("bad community", [peer("r1")], [adv("all", communities=["65536:1"])], [POOL],
     [(bgp_plan.ADVERTISEMENT, "all", "65536:1")]),
    ("advertisement selects no pool", [peer("r1")], [adv("none", ipAddressPools=["gone"])], [POOL],
     [(bgp_plan.ADVERTISEMENT, "none", "selects no IPAddressPool")]),
    ("advertisement names a missing peer", [peer("r1")], [adv("x", peers=["r9"])], [POOL],
     [(bgp_plan.ADVERTISEMENT, "x", "r9"), (bgp_plan.ADVERTISEMENT, "x", "selects no BGPPeer")]),
    ("two ASNs of ours on a node", [peer("a"), peer("b", "203.0.113.2", my_asn=7)], [adv("all")], [POOL],
     [(bgp_plan.PEER, "b", "one ASN")] * 3),
]


@pytest.mark.parametrize("peers,ads,pools,want", [c[1:] for c in PROBLEM_CASES], ids=[c[0] for c in PROBLEM_CASES])
def test_problems_name_the_object_and_the_field(peers, ads, pools, want):
    got = bgp_plan.problems(cluster([], peers=peers, ads=ads, pools=pools))
    assert len(got) == len(want)
    for p, (kind, name, word) in zip(got, sorted(want), strict=True):
        assert (p.kind, p.name) == (kind, name) and word in p.message


def test_the_plan_does_not_depend_on_the_order_of_objects():
    services = [svc(f"s{i}", [f"192.0.2.{40 + i}"]) for i in range(5)]
    peers = [peer("r1"), peer("r2", "203.0.113.2")]
    ads = [adv("a", communities=["1:1"]), adv("b", communities=["2:2"], localPref=5)]
    forward = bgp_plan.decide_bgp(cluster(services, peers=peers, ads=ads))
    backward = bgp_plan.decide_bgp(cluster(services[::-1], peers=peers[::-1], ads=ads[::-1], nodes=NODES[::-1]))
    assert forward == backward


def test_nothing_is_advertised_that_was_not_allocated_from_a_pool():
    # Whatever the objects say, every prefix advertised contains an IP a Service of ours holds
    # from a pool: the plan's answer for a status written by hand is no route.
    services = [svc("ours", ["192.0.2.40"]), svc("hand", ["192.0.2.45"], pool=None),
                svc("other-class", ["192.0.2.46"])]
    services[2]["spec"] = dict(services[2]["spec"], loadBalancerClass="example.com/other")
    intent = bgp_plan.node_intent(cluster(services), "n1")
    assert [r.prefix for r in intent.routes["r1"]] == ["192.0.2.40/32"]


def test_every_decision_path_is_in_the_node_intents():
    services = [svc("a", ["192.0.2.40"]), svc("b", ["2001:db8::44"], policy="Local")]
    c = cluster(services, [slice_("a", ["n1", "n2", "n3"]), slice_("b", ["n2"])],
                peers=[peer("r1"), peer("r2", "203.0.113.2", nodeSelectors=[{"matchLabels": {"rack": "a"}}])])
    paths = {(p.node, p.peer, p.route) for d in bgp_plan.decide_bgp(c).values() for p in d.paths}
    from_intents = {(n, peer_name, r) for n in ("n1", "n2", "n3")
                    for peer_name, routes in bgp_plan.node_intent(c, n).routes.items() for r in routes}
    assert paths == from_intents and len(paths) == 3 + 2 + 2


# name, ads -> the advertisements reported as overlapping
OVERLAP_CASES = [
    ("same attributes: no matter", [adv("a", communities=["1:1"]), adv("b", communities=["1:1"])], set()),
    ("different communities on the same pool and peer", [adv("a", communities=["1:1"]), adv("b")], {"a", "b"}),
    ("different pools", [adv("a", ipAddressPools=["lan"], localPref=5), adv("b", ipAddressPools=["v6"])], set()),
    ("different peers", [adv("a", peers=["r1"], localPref=5), adv("b", peers=["r2"])], set()),
]


@pytest.mark.parametrize("ads,want", [c[1:] for c in OVERLAP_CASES], ids=[c[0] for c in OVERLAP_CASES])
def test_overlapping_advertisements_are_named(ads, want):
    found = bgp_plan.overlaps(cluster([], peers=[peer("r1"), peer("r2", "203.0.113.2")], ads=ads))
    assert set(found) == want
    for name in want:
        assert "union of their communities and the highest localPref" in found[name]
