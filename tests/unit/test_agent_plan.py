"""What every agent decides about every assigned IP, from the cluster's objects. Pure."""

from __future__ import annotations

from itertools import combinations

import pytest

from leifur.announce import as_read, plan
from leifur.announce.election import owner
from leifur.announce.interfaces import Lost
from leifur.model import names


def svc(name: str, ips: list[str], policy: str = "Cluster", ns: str = "default", pool: str | None = "lan",
        **meta) -> dict:
    annotations = {names.ANN_ALLOCATED_FROM_POOL: pool} if pool else {}
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations, **meta},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}},
    }


def slice_(svc_name: str, nodes: list[str], ready: bool | None = True, ns: str = "default") -> dict:
    cond = {} if ready is None else {"ready": ready}
    return {"metadata": {"name": f"{svc_name}-x", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc_name}},
            "endpoints": [{"addresses": ["198.51.100.7"], "nodeName": n, "conditions": cond} for n in nodes]}


def node(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}}


POOL = {"metadata": {"name": "lan", "labels": {"tier": "a"}}, "spec": {"addresses": ["192.0.2.40-192.0.2.49",
                                                                                      "2001:db8::40/124"]}}
AD = {"metadata": {"name": "all"}, "spec": {"interfaces": ["eth0"]}}
NODES = [node("n1"), node("n2"), node("n3")]
LIVE = {"n1", "n2", "n3"}


def cluster(services, slices=None, nodes=NODES, pools=(POOL,), ads=(AD,)) -> plan.Cluster:
    if slices is None:
        slices = [slice_(s["metadata"]["name"], ["n1"]) for s in services]
    return plan.Cluster(list(services), list(slices), list(nodes), list(pools), list(ads))


def test_each_ip_gets_the_rendezvous_owner_among_live_nodes():
    ips = [f"192.0.2.{i}" for i in range(40, 50)]
    c = cluster([svc(f"s{i}", [ip]) for i, ip in enumerate(ips)])
    out = plan.decide_announcements(c, LIVE)
    assert sorted(out) == sorted(ips)
    for ip in ips:
        a = out[ip].announcement
        assert a is not None and a.node == owner(LIVE, ip) and a.interfaces == ("eth0",) and a.mode == "Responder"
    # A dead node's IPs move; nothing else does.
    after = plan.decide_announcements(c, LIVE - {"n2"})
    for ip in ips:
        was = out[ip].announcement.node
        assert after[ip].announcement.node == (was if was != "n2" else owner(LIVE - {"n2"}, ip))


def test_no_ready_endpoint_means_no_announcement():
    s = svc("web", ["192.0.2.40"])
    for slices in ([], [slice_("web", ["n1"], ready=False)], [slice_("other", ["n1"])]):
        d = plan.decide_announcements(cluster([s], slices), LIVE)["192.0.2.40"]
        assert d.announcement is None and d.reason == plan.NO_ENDPOINTS
    # A nil ready condition means ready (API semantics).
    d = plan.decide_announcements(cluster([s], [slice_("web", ["n1"], ready=None)]), LIVE)["192.0.2.40"]
    assert d.announcement is not None


def test_local_policy_announces_only_from_nodes_with_a_ready_endpoint():
    s = svc("web", ["192.0.2.41"], policy="Local")
    for ready_on in (["n1"], ["n2"], ["n3"], ["n2", "n3"]):
        d = plan.decide_announcements(cluster([s], [slice_("web", ready_on)]), LIVE)["192.0.2.41"]
        assert d.announcement.node == owner(ready_on, "192.0.2.41")
    d = plan.decide_announcements(cluster([s], [slice_("web", ["n3"])]), LIVE - {"n3"})["192.0.2.41"]
    assert d.announcement is None and d.reason == plan.NO_NODE


def test_a_shared_ip_goes_to_a_node_that_serves_every_service_on_it():
    a = svc("a", ["192.0.2.42"], policy="Local")
    b = svc("b", ["192.0.2.42"], policy="Local")
    slices = [slice_("a", ["n1", "n2"]), slice_("b", ["n2", "n3"])]
    d = plan.decide_announcements(cluster([a, b], slices), LIVE)["192.0.2.42"]
    assert d.services == ("default/a", "default/b") and d.announcement.node == "n2"


def test_exclusion_label_and_node_selectors_are_honoured():
    nodes = [node("n1", **{names.LABEL_EXCLUDE_LB: ""}), node("n2", rack="r1"), node("n3", rack="r2")]
    ad = {"metadata": {"name": "r2"}, "spec": {"nodeSelectors": [{"matchLabels": {"rack": "r2"}}]}}
    for i in range(40, 50):
        ip = f"192.0.2.{i}"
        d = plan.decide_announcements(cluster([svc("s", [ip])], nodes=nodes, ads=[ad]), LIVE)[ip]
        assert d.announcement.node == "n3"
    d = plan.decide_announcements(cluster([svc("s", ["192.0.2.40"])], nodes=nodes, ads=[ad]),
                                  LIVE - {"n3"})["192.0.2.40"]
    assert d.announcement is None and d.reason == plan.NO_NODE and "live agent" in d.message


def test_ips_not_allocated_by_leifur_are_never_announced():
    # No pool of that name; no annotation at all (another implementation wrote the status).
    for s in (svc("s", ["203.0.113.5"], pool="gone"), svc("s", ["192.0.2.40"], pool=None)):
        [d] = plan.decide_announcements(cluster([s]), LIVE).values()
        assert d.announcement is None and d.reason == plan.OUTSIDE_POOLS


def test_an_ip_left_outside_a_shrunk_pool_stays_announced():
    shrunk = {"metadata": {"name": "lan"}, "spec": {"addresses": ["192.0.2.40/31"]}}
    d = plan.decide_announcements(cluster([svc("s", ["192.0.2.47"])], pools=[shrunk]), LIVE)["192.0.2.47"]
    assert d.announcement is not None and d.pool == "lan"


def test_a_pool_edited_into_an_invalid_spec_keeps_its_ips_announced():
    """Regression (chaos suite): a typo in a pool edit withdrew every IP of that pool. The controller
    reports the spec and keeps the allocations; the agents must keep announcing them."""
    typo = {"metadata": {"name": "lan", "labels": {"tier": "a"}},
            "spec": {"addresses": ["192.0.2.50-192.0.2.40"]}}
    d = plan.decide_announcements(cluster([svc("s", ["192.0.2.47"])], pools=[typo]), LIVE)["192.0.2.47"]
    assert d.announcement is not None and d.pool == "lan"
    # Advertisements still select it by name and by its labels.
    sel = {"metadata": {"name": "sel"}, "spec": {"ipAddressPoolSelectors": [{"matchLabels": {"tier": "a"}}]}}
    got = plan.decide_announcements(cluster([svc("s", ["192.0.2.47"])], pools=[typo], ads=[sel]), LIVE)
    assert got["192.0.2.47"].announcement
    # A pool that does not exist at all is still no pool.
    assert plan.decide_announcements(cluster([svc("s", ["192.0.2.47"], pool="gone")], pools=[typo]), LIVE)[
        "192.0.2.47"].reason == plan.OUTSIDE_POOLS


def test_an_ip_whose_pool_went_away_is_announced_under_a_pool_that_contains_it():
    """A deleted pool overlapping another: the controller lets it go and credits its Services to
    the other pool, which rewrites their annotation a moment later. Meanwhile the IP stays up."""
    d = plan.decide_announcements(cluster([svc("s", ["192.0.2.45"], pool="deleted-overlap")]), LIVE)["192.0.2.45"]
    assert d.announcement is not None and d.pool == "lan"


def test_addresses_a_lan_cannot_carry_are_refused():
    mcast = {"metadata": {"name": "lan"}, "spec": {"addresses": ["224.0.0.10/31", "192.0.2.40/29"]}}
    for ip in ("224.0.0.10", "224.0.0.11"):
        d = plan.decide_announcements(cluster([svc("s", [ip])], pools=[mcast]), LIVE)[ip]
        assert d.announcement is None and d.reason == plan.UNUSABLE


def test_a_pool_no_advertisement_selects_is_not_announced():
    ad = {"metadata": {"name": "other"}, "spec": {"ipAddressPools": ["elsewhere"]}}
    d = plan.decide_announcements(cluster([svc("s", ["192.0.2.40"])], ads=[ad]), LIVE)["192.0.2.40"]
    assert d.reason == plan.NO_ADVERTISEMENT
    sel = {"metadata": {"name": "sel"}, "spec": {"ipAddressPoolSelectors": [{"matchLabels": {"tier": "a"}}]}}
    assert plan.decide_announcements(cluster([svc("s", ["192.0.2.40"])], ads=[sel]), LIVE)["192.0.2.40"].announcement


def test_services_not_ours_or_being_deleted_are_ignored():
    other_class = svc("c", ["192.0.2.43"])
    other_class["spec"]["loadBalancerClass"] = "example.com/other"
    deleting = svc("d", ["192.0.2.44"], deletionTimestamp="2026-01-01T00:00:00Z")
    cluster_ip = svc("e", ["192.0.2.45"])
    cluster_ip["spec"]["type"] = "ClusterIP"
    assert plan.decide_announcements(cluster([other_class, deleting, cluster_ip]), LIVE) == {}
    assert "192.0.2.43" in plan.decide_announcements(cluster([other_class]), LIVE, "example.com/other")


def test_ipv6_and_netlink_mode():
    ad = {"metadata": {"name": "k"}, "spec": {"mode": "Netlink"}}
    d = plan.decide_announcements(cluster([svc("s", ["2001:db8::41"])], ads=[ad]), LIVE)["2001:db8::41"]
    assert d.announcement.mode == "Netlink" and d.announcement.interfaces == () and d.pool == "lan"


def test_broken_objects_do_not_stop_the_others():
    broken_pool = {"metadata": {"name": "bad"}, "spec": {"addresses": ["not-an-ip"]}}
    odd = svc("odd", ["192.0.2.46"])
    odd["status"]["loadBalancer"]["ingress"] = [{"ip": "garbage"}, {"hostname": "x"}, {"ip": "192.0.2.46"}]
    out = plan.decide_announcements(cluster([odd], pools=[broken_pool, POOL]), LIVE)
    assert list(out) == ["192.0.2.46"] and out["192.0.2.46"].announcement is not None


def test_in_one_decision_each_ip_is_elected_among_its_own_nodes():
    """Eligibility is worked out once per pool and set of Local endpoints: IPs of different pools,
    and Local Services of one pool with different endpoints, must each get their own."""
    other = {"metadata": {"name": "rack2"}, "spec": {"addresses": ["192.0.2.50-192.0.2.59"]}}
    nodes = [node("n1", rack="r1"), node("n2", rack="r1"), node("n3", rack="r2")]
    ads = [{"metadata": {"name": "r1"}, "spec": {"ipAddressPools": ["lan"],
                                                 "nodeSelectors": [{"matchLabels": {"rack": "r1"}}]}},
           {"metadata": {"name": "r2"}, "spec": {"ipAddressPools": ["rack2"], "interfaces": ["eth1"],
                                                 "nodeSelectors": [{"matchLabels": {"rack": "r2"}}]}}]
    services = [svc(f"c{i}", [f"192.0.2.{40 + i}"]) for i in range(4)]
    services += [svc(f"l{i}", [f"192.0.2.{44 + i}"], policy="Local") for i in range(4)]
    services += [svc(f"o{i}", [f"192.0.2.{50 + i}"], pool="rack2") for i in range(4)]
    slices = [slice_(f"c{i}", ["n1", "n2", "n3"]) for i in range(4)]
    slices += [slice_(f"l{i}", [["n1"], ["n2"], ["n1"], ["n3", "n2"]][i]) for i in range(4)]
    slices += [slice_(f"o{i}", ["n1", "n2", "n3"]) for i in range(4)]
    out = plan.decide_announcements(cluster(services, slices, nodes, (POOL, other), ads), LIVE)
    for i in range(4):
        assert out[f"192.0.2.{40 + i}"].announcement.node == owner(["n1", "n2"], f"192.0.2.{40 + i}")
        assert out[f"192.0.2.{50 + i}"].announcement == plan.Announcement(
            f"192.0.2.{50 + i}", "n3", ("eth1",), "Responder")
    assert [out[f"192.0.2.{44 + i}"].announcement.node for i in range(4)] == ["n1", "n2", "n1", "n2"]


def ep(node: str | None, ready: bool | None = True, address: str = "198.51.100.7") -> dict:
    out: dict = {"addresses": [address], "targetRef": {"kind": "Pod", "name": f"p-{address}"}, "zone": "z1",
                 "conditions": {} if ready is None else {"ready": ready, "serving": True, "terminating": False}}
    if node is not None:
        out["nodeName"] = node
    return out


def with_endpoints(endpoints: list[dict], name: str = "web") -> dict:
    s = slice_(name, [])
    s["endpoints"] = endpoints
    s["ports"] = [{"port": 8080, "protocol": "TCP"}]
    return s


@pytest.mark.parametrize("slices", [
    pytest.param([with_endpoints([ep("n1"), ep("n2")])], id="ready-on-two-nodes"),
    pytest.param([with_endpoints([ep("n1", ready=None)])], id="nil-ready-reads-as-ready"),
    pytest.param([with_endpoints([ep("n1", ready=False), ep("n2")])], id="not-ready-is-left-out"),
    pytest.param([with_endpoints([ep(None)])], id="no-node-name"),
    pytest.param([with_endpoints([ep("n1", address=f"198.51.100.{i}") for i in range(50)]
                                 + [ep("n1", ready=False)])], id="fifty-pods-on-one-node"),
    pytest.param([with_endpoints([ep("n1")]), with_endpoints([ep("n3")], name="other")], id="two-services"),
    pytest.param([{"metadata": {"name": "x", "namespace": "default"}, "endpoints": [ep("n1")]}],
                 id="no-service-label"),
    pytest.param([with_endpoints([])], id="no-endpoints"),
])
def test_what_the_cache_keeps_of_a_slice_reads_the_same(slices):
    kept = [as_read.endpoint_slice(s) for s in slices]
    assert plan.ready_endpoint_nodes(kept) == plan.ready_endpoint_nodes(slices)
    for s, k in zip(slices, kept, strict=True):
        assert k["metadata"] == s["metadata"]
        assert len(k["endpoints"]) == len({(e.get("nodeName"), e["conditions"].get("ready")) for e in s["endpoints"]})


def full(s: dict, **spec) -> dict:
    """As the API server returns it: with what the agent's cache leaves out."""
    s = {**s, "spec": {**s["spec"], "selector": {"app": "x"}, "clusterIP": "198.51.100.1",
                       "clusterIPs": ["198.51.100.1"], "ipFamilies": ["IPv4"], "sessionAffinity": "None", **spec}}
    s["metadata"] = {**s["metadata"], "uid": "u-" + s["metadata"]["name"], "resourceVersion": "7",
                     "finalizers": [names.SERVICE_FINALIZER], "creationTimestamp": "2026-01-01T00:00:00Z"}
    s["status"] = {**s["status"], "conditions": [{"type": names.COND_SERVICE_ALLOCATED, "status": "True"}]}
    return s


@pytest.mark.parametrize("services", [
    pytest.param([full(svc("web", ["192.0.2.40"]))], id="ours"),
    pytest.param([full(svc("web", ["192.0.2.41"], policy="Local"))], id="local-policy"),
    pytest.param([full(svc("a", ["192.0.2.42"])), full(svc("b", ["192.0.2.42"]))], id="shared-ip"),
    pytest.param([full(svc("web", ["192.0.2.43"]), loadBalancerClass="example.com/other")], id="another-class"),
    pytest.param([full(svc("web", ["192.0.2.44"]), type="NodePort")], id="not-a-load-balancer"),
    pytest.param([full(svc("web", ["192.0.2.45"], deletionTimestamp="2026-01-02T00:00:00Z"))], id="being-deleted"),
    pytest.param([full(svc("web", ["192.0.2.46"], pool=None))], id="not-allocated-by-leifur"),
    pytest.param([full(svc("web", ["2001:db8::41"]))], id="ipv6"),
])
def test_what_the_cache_keeps_of_a_service_decides_the_same(services):
    kept = [as_read.service(s) for s in services]
    for lb_class in (None, "example.com/other"):
        assert (plan.decide_announcements(cluster(kept), LIVE, lb_class)
                == plan.decide_announcements(cluster(services), LIVE, lb_class))
    for s, k in zip(services, kept, strict=True):
        assert (k["metadata"]["uid"], k["metadata"]["annotations"]) == (s["metadata"]["uid"],
                                                                        s["metadata"]["annotations"])
        assert "ports" not in k["spec"] and "conditions" not in k["status"]


# -- deciding again after nodes left (`before=`): only the IPs whose owner left are decided anew,
# and the answer is what deciding every IP anew gives, for every set of nodes that can leave.

FOUR = ("n1", "n2", "n3", "n4")
WIDE = {"metadata": {"name": "lan"}, "spec": {"addresses": ["192.0.2.40-192.0.2.79", "2001:db8::40/122"]}}
UNADVERTISED = {"metadata": {"name": "unadvertised"}, "spec": {"addresses": ["198.51.100.0/28"]}}
ON_ETH0 = {"metadata": {"name": "all"}, "spec": {"ipAddressPools": ["lan"], "interfaces": ["eth0"]}}
BY_SUBNET = {"metadata": {"name": "all"}, "spec": {"ipAddressPools": ["lan"]}}


def many_services(count: int, policy: str = "Cluster", endpoints: tuple[str, ...] = FOUR) -> tuple[list, list]:
    services = [svc(f"s{i}", [f"192.0.2.{40 + i}", f"2001:db8::{0x40 + i:x}"], policy) for i in range(count)]
    return services, [slice_(f"s{i}", list(endpoints)) for i in range(count)]


def nodes_left_cluster_policy() -> plan.Cluster:
    services, slices = many_services(24)
    return plan.Cluster(services, slices, [node(n) for n in FOUR], [WIDE], [ON_ETH0])


def nodes_left_local_policy() -> plan.Cluster:
    services, slices = [], []
    for i, where in enumerate([("n1",), ("n2", "n3"), ("n1", "n4"), (), ("n1", "n2", "n3", "n4"), ("n3",)] * 3):
        services.append(svc(f"s{i}", [f"192.0.2.{40 + i}"], "Local"))
        slices.append(slice_(f"s{i}", list(where)))
    return plan.Cluster(services, slices, [node(n) for n in FOUR], [WIDE], [ON_ETH0])


def nodes_left_shared_ips() -> plan.Cluster:
    services = [svc("web", ["192.0.2.40"], "Local"), svc("dns", ["192.0.2.40"], "Local"),
                svc("api", ["192.0.2.41"]), svc("api6", ["192.0.2.41"])]
    slices = [slice_("web", ["n1", "n2", "n3"]), slice_("dns", ["n2", "n3", "n4"]), slice_("api", list(FOUR)),
              slice_("api6", ["n1"])]
    return plan.Cluster(services, slices, [node(n) for n in FOUR], [WIDE], [ON_ETH0])


def nodes_left_selected_nodes() -> plan.Cluster:
    services, slices = many_services(16)
    ad = {"metadata": {"name": "some"}, "spec": {"ipAddressPools": ["lan"],
                                                  "nodeSelectors": [{"matchLabels": {"lb": "yes"}}]}}
    nodes = [node("n1", lb="yes"), node("n2", lb="yes"), node("n3", lb="yes", **{names.LABEL_EXCLUDE_LB: ""}),
             node("n4")]
    return plan.Cluster(services, slices, nodes, [WIDE], [ad])


def nodes_left_not_announced() -> plan.Cluster:
    services, slices = many_services(6)
    services += [svc("foreign", ["192.0.2.70"], pool=None), svc("elsewhere", ["198.51.100.3"], pool="unadvertised"),
                 svc("multicast", ["224.0.0.9"])]
    slices += [slice_(n, list(FOUR)) for n in ("foreign", "elsewhere", "multicast")]
    return plan.Cluster(services, slices, [node(n) for n in FOUR], [WIDE, UNADVERTISED], [ON_ETH0])


def nodes_left_by_subnet() -> plan.Cluster:
    return plan.Cluster(*many_services(16), [node(n) for n in FOUR], [WIDE], [BY_SUBNET])


SUBNET_LOST = Lost.from_dict({"subnets": ["192.0.2.0/24"], "interfaces": []})
NODES_LEFT_CASES = {
    "cluster-policy": (nodes_left_cluster_policy, None),
    "local-policy-and-no-endpoints": (nodes_left_local_policy, None),
    "shared-ips": (nodes_left_shared_ips, None),
    "node-selectors-and-exclusion": (nodes_left_selected_nodes, None),
    "not-announced-for-other-reasons": (nodes_left_not_announced, None),
    "a-link-lost-on-one-node": (nodes_left_cluster_policy, {"n2": Lost(named=(("eth0",),))}),
    "the-subnet-lost-on-two-nodes": (nodes_left_by_subnet, {"n1": SUBNET_LOST, "n3": SUBNET_LOST}),
    "the-subnet-lost-everywhere": (nodes_left_by_subnet, {n: SUBNET_LOST for n in FOUR}),
}


def subsets(live: frozenset[str]) -> list[frozenset[str]]:
    """Every set of live nodes that nodes leaving `live` can leave, `live` and none included."""
    return [frozenset(c) for k in range(len(live) + 1) for c in combinations(sorted(live), k)]


@pytest.mark.parametrize("name", NODES_LEFT_CASES)
def test_after_nodes_left_the_decisions_are_those_made_anew(name: str) -> None:
    make, lost = NODES_LEFT_CASES[name]
    cluster = make()
    for live in (frozenset(FOUR), frozenset(FOUR[:3])):
        before = plan.decide_announcements(cluster, live, None, lost)
        for after in subsets(live):
            again = plan.decide_announcements(cluster, after, None, lost, before=(live, before))
            assert again == plan.decide_announcements(cluster, after, None, lost), sorted(after)
            assert list(again) == list(before)  # the same IPs, in the same order


def test_only_the_ips_of_nodes_that_left_are_decided_again() -> None:
    cluster = nodes_left_cluster_policy()
    before = plan.decide_announcements(cluster, FOUR)
    again = plan.decide_announcements(cluster, {"n1", "n3", "n4"}, before=(frozenset(FOUR), before))
    moved = {ip for ip, d in before.items() if d.announcement and d.announcement.node == "n2"}
    assert moved and all(again[ip].announcement.node != "n2" for ip in moved)  # type: ignore[union-attr]
    assert all(again[ip] is d for ip, d in before.items() if ip not in moved)


@pytest.mark.parametrize("live", [frozenset(FOUR), frozenset({"n1", "n2", "n3", "n4", "n5"}),
                                  frozenset({"n1", "n5"})], ids=["the-same", "a-node-joined", "one-left-one-joined"])
def test_nodes_that_joined_are_decided_for_every_ip(live: frozenset[str]) -> None:
    cluster = plan.Cluster(*many_services(24), [node(n) for n in (*FOUR, "n5")], [WIDE], [ON_ETH0])
    before = plan.decide_announcements(cluster, FOUR)
    again = plan.decide_announcements(cluster, live, before=(frozenset(FOUR), before))
    assert again == plan.decide_announcements(cluster, live)
