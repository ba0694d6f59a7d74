"""The controller's pure decisions: reading a Service, and what it holds after a sync."""

from __future__ import annotations

import ipaddress

import pytest

from leifur.controller import allocation
from leifur.ipam.allocator import Allocator
from leifur.ipam.pool import parse_pool
from leifur.model import names, service


def svc(name="web", ns="ns", annotations=None, **spec) -> dict:
    base = {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}], "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack"}
    return {"metadata": {"name": name, "namespace": ns, "annotations": annotations or {}}, "spec": {**base, **spec}}


def ip(text: str):
    return ipaddress.ip_address(text)


@pytest.fixture
def alloc() -> Allocator:
    return Allocator([parse_pool("v4", {"addresses": ["192.0.2.0/30"]}),
                      parse_pool("v6", {"addresses": ["2001:db8::/126"]})])


def test_ownership_follows_type_and_class():
    assert service.is_ours(svc(), None)
    assert not service.is_ours(svc(type="ClusterIP"), None)
    assert not service.is_ours(svc(loadBalancerClass="x"), None)
    assert service.is_ours(svc(loadBalancerClass="x"), "x")
    assert not service.is_ours(svc(), "x")
    deleting = svc()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not service.is_ours(deleting, None)


@pytest.mark.parametrize(("s", "fragment"), [
    (svc(loadBalancerIP="192.0.2.1", annotations={names.ANN_LOAD_BALANCER_IPS: "192.0.2.1"}), "both"),
    (svc(annotations={names.ANN_LOAD_BALANCER_IPS: "192.0.2.1,192.0.2.2"}), "one IP per family"),
    (svc(annotations={names.ANN_LOAD_BALANCER_IPS: "nope"}), "'nope' is not an IP"),
    (svc(annotations={names.ANN_LOAD_BALANCER_IPS: "2001:db8::1"}), "IPv6"),
    (svc(annotations={names.ANN_ADDRESS_POOL: " "}), "empty"),
    (svc(ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack",
         annotations={names.ANN_LOAD_BALANCER_IPS: "192.0.2.1"}), "one IP of each family"),
])
def test_bad_requests_are_explained(s, fragment):
    with pytest.raises(service.ServiceSpecError) as e:
        service.parse(s)
    assert fragment in str(e.value)


def test_parse_reads_families_traits_and_requests():
    req = service.parse(svc(ipFamilies=["IPv6", "IPv4"], ipFamilyPolicy="PreferDualStack",
                            externalTrafficPolicy="Local", selector={"app": "web"},
                            annotations={names.ANN_ALLOW_SHARED_IP: "k", names.ANN_LOAD_BALANCER_IPS: "2001:db8::2"}))
    assert req.families == (6, 4) and req.required_families == ()
    assert req.requested == {6: ip("2001:db8::2")}
    assert req.traits.sharing_key == "k" and req.traits.traffic_policy == "Local"
    assert req.traits.selector == frozenset({("app", "web")})
    assert req.traits.ports == frozenset({("TCP", 80)})


def test_require_dual_stack_is_all_or_nothing(alloc):
    alloc.set_pools([alloc.pools["v4"]])  # no IPv6 pool
    out = allocation.allocate(alloc, service.parse(svc(ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack")),
                          {})
    assert out.ips == [] and not out.ok and out.reason == "FamilyUnavailable"
    assert alloc.ips_of("ns/web") == []


def test_prefer_dual_stack_takes_what_it_can_then_adds_the_rest(alloc):
    v6 = alloc.pools["v6"]
    alloc.set_pools([alloc.pools["v4"]])
    req = service.parse(svc(ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="PreferDualStack"))
    first = allocation.allocate(alloc, req, {})
    assert first.ok and first.reason == allocation.REASON_PARTIAL and [i.version for i, _ in first.ips] == [4]
    alloc.set_pools([*alloc.pools.values(), v6])
    second = allocation.allocate(alloc, req, {})
    assert second.ok and second.reason == allocation.REASON_ALLOCATED
    assert second.ips[0] == first.ips[0] and second.ips[1][0].version == 6


def test_a_held_ip_survives_a_failed_change(alloc):
    req = service.parse(svc())
    got = allocation.allocate(alloc, req, {}).ips[0][0]
    # The user asks for an IP another Service holds: refused, and the old IP stays.
    allocation.allocate(alloc, service.parse(svc("other", annotations={names.ANN_LOAD_BALANCER_IPS: "192.0.2.3"})), {})
    out = allocation.allocate(alloc, service.parse(svc(annotations={names.ANN_LOAD_BALANCER_IPS: "192.0.2.3"})), {})
    assert not out.ok and out.reason == "Taken" and out.ips == [(got, "v4")]
    assert alloc.ips_of("ns/web") == [got]


def test_an_ip_outside_every_pool_is_kept_not_renumbered(alloc):
    req = service.parse(svc(annotations={names.ANN_LOAD_BALANCER_IPS: "192.0.2.3"}))
    allocation.allocate(alloc, req, {})
    alloc.set_pools([parse_pool("v4", {"addresses": ["192.0.2.0/31"]})])  # shrunk: .3 is outside
    out = allocation.allocate(alloc, req, {})
    assert out.ok and out.ips == [(ip("192.0.2.3"), None)]
    assert "outside every pool" in out.message
    unrequested = service.parse(svc())
    assert allocation.allocate(alloc, unrequested, {}).ips == [(ip("192.0.2.3"), None)]


def test_changing_the_pool_annotation_moves_the_service(alloc):
    alloc.set_pools([*alloc.pools.values(), parse_pool("other", {"addresses": ["198.51.100.0/30"]})])
    first = allocation.allocate(alloc, service.parse(svc(annotations={names.ANN_ADDRESS_POOL: "v4"})), {})
    assert first.pools == ["v4"]
    moved = allocation.allocate(alloc, service.parse(svc(annotations={names.ANN_ADDRESS_POOL: "other"})), {})
    assert moved.pools == ["other"] and alloc.usage("v4")[4] == (4, 0)


def test_a_port_change_that_breaks_sharing_gives_up_the_shared_ip(alloc):
    share = {names.ANN_ALLOW_SHARED_IP: "k"}
    a = allocation.allocate(alloc, service.parse(svc("a", annotations=share)), {}).ips[0][0]
    b = allocation.allocate(alloc, service.parse(svc("b", annotations=share, ports=[{"port": 81}])), {}).ips[0][0]
    assert a == b
    # b now also wants port 80: it is the one that changed, so it moves.
    out = allocation.allocate(alloc, service.parse(svc("b", annotations=share, ports=[{"port": 80}, {"port": 81}])), {})
    assert out.ok and out.ips[0][0] != a
    assert [h.key for h in alloc.holders(a)] == ["ns/a"]


def test_a_failed_require_dual_stack_change_keeps_what_it_had(alloc):
    alloc.set_pools([*alloc.pools.values(), parse_pool("v4only", {"addresses": ["198.51.100.0/30"]})])
    dual = {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}
    first = allocation.allocate(alloc, service.parse(svc(**dual)), {})
    assert first.ok and len(first.ips) == 2
    # Pointed at a pool without IPv6: the change cannot be made, and nothing is lost.
    out = allocation.allocate(alloc, service.parse(svc(annotations={names.ANN_ADDRESS_POOL: "v4only"}, **dual)), {})
    assert not out.ok and out.reason == "FamilyUnavailable"
    assert sorted(map(str, alloc.ips_of("ns/web"))) == sorted(str(i) for i, _ in first.ips)
    assert [i for i, _ in out.ips] == [i for i, _ in first.ips]


def test_malformed_services_are_spec_errors_not_crashes():
    for bad in (svc(ports=[{"protocol": "TCP"}]), svc(ports="80"), svc(externalTrafficPolicy="Global"),
                svc(ipFamilies=["IPv5"])):
        with pytest.raises(service.ServiceSpecError):
            service.parse(bad)


def test_a_held_ip_keeps_the_pool_it_came_from_when_an_overlapping_pool_appears():
    """Regression (chaos suite): a new pool overlapping the old one, with a name that sorts first,
    took over the allocation annotation of Services already holding IPs in the overlap, and the
    agents stopped announcing them when no advertisement selected the new pool."""
    zlan = parse_pool("z-lan", {"addresses": ["192.0.2.0/29"]})
    alloc = Allocator([zlan])
    first = allocation.allocate(alloc, service.parse(svc()), {})
    assert first.pools == ["z-lan"]
    alloc.set_pools([zlan, parse_pool("a-overlap", {"addresses": ["192.0.2.0/30"]})])
    held = svc(annotations={names.ANN_ALLOCATED_FROM_POOL: "z-lan"})
    again = allocation.allocate(alloc, service.parse(held), {})
    assert again.ips == first.ips and again.pools == ["z-lan"]
    # With the pool it came from gone, the IP is credited to the pool that still contains it.
    alloc.set_pools([parse_pool("a-overlap", {"addresses": ["192.0.2.0/30"]})])
    assert allocation.allocate(alloc, service.parse(held), {}).pools == ["a-overlap"]


# -- adoption: a Service that becomes ours showing IPs someone else gave it (MetalLB, a hand edit) --


def showing(obj: dict, *ips: str) -> dict:
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": i} for i in ips]}}
    return obj


DUAL = {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"}
ADOPTION_CASES = [
    # name, a Service already holding .1 (its annotations), the newcomer, held after, kept in status, reason
    ("in-a-pool-kept-as-it-is", None, showing(svc(), "192.0.2.2"), [("192.0.2.2", "v4")], [], "Allocated"),
    ("not-the-lowest-free-address", None, showing(svc(), "192.0.2.3"), [("192.0.2.3", "v4")], [], "Allocated"),
    ("dual-stack-both-kept", None, showing(svc(**DUAL), "192.0.2.2", "2001:db8::2"),
     [("192.0.2.2", "v4"), ("2001:db8::2", "v6")], [], "Allocated"),
    ("outside-every-pool-kept-and-reported", None, showing(svc(), "198.51.100.9"), [("198.51.100.9", None)], [],
     "NotInPool"),
    ("held-by-one-it-may-not-share-with-left-there-and-reported", {},
     showing(svc(), "192.0.2.1"), [], ["192.0.2.1"], "Taken"),
    ("shared-under-metallbs-sharing-key", {"metallb.io/allow-shared-ip": "k"},
     showing(svc(annotations={"metallb.universe.tf/allow-shared-ip": "k"}, ports=[{"port": 81}]), "192.0.2.1"),
     [("192.0.2.1", "v4")], [], "Allocated"),
    ("one-family-refused-the-other-kept", {},
     showing(svc(**DUAL), "192.0.2.1", "2001:db8::2"), [("2001:db8::2", "v6")], ["192.0.2.1"], "Taken"),
    ("require-dual-stack-one-refused-holds-neither-and-keeps-both-shown", {},
     showing(svc(ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack"), "192.0.2.1", "2001:db8::2"),
     [], ["192.0.2.1", "2001:db8::2"], "Taken"),
    ("a-requested-ip-is-the-users-choice", None,
     showing(svc(annotations={names.ANN_LOAD_BALANCER_IPS: "192.0.2.3"}), "192.0.2.2"), [("192.0.2.3", "v4")], [],
     "Allocated"),
    ("a-pool-named-that-does-not-contain-it-moves-it", None,
     showing(svc(annotations={names.ANN_ADDRESS_POOL: "v4b"}), "192.0.2.2"), [("198.51.100.0", "v4b")], [],
     "Allocated"),
    ("a-family-no-longer-wanted-is-not-adopted", None, showing(svc(), "192.0.2.2", "2001:db8::2"),
     [("192.0.2.2", "v4")], [], "Allocated"),
]


@pytest.mark.parametrize(("holder", "newcomer", "held", "kept", "reason"), [c[1:] for c in ADOPTION_CASES],
                         ids=[c[0] for c in ADOPTION_CASES])
def test_what_a_service_showing_ips_keeps_when_it_becomes_ours(holder, newcomer, held, kept, reason):
    alloc = Allocator([parse_pool("v4", {"addresses": ["192.0.2.0/30"]}),
                       parse_pool("v4b", {"addresses": ["198.51.100.0/31"], "autoAssign": False}),
                       parse_pool("v6", {"addresses": ["2001:db8::/126"]})])
    if holder is not None:
        allocation.allocate(alloc, service.parse(svc("holder", annotations={names.ANN_LOAD_BALANCER_IPS: "192.0.2.1",
                                                                            **holder})), {})
    out = allocation.allocate(alloc, service.parse(newcomer), {})
    assert [(str(i), p) for i, p in out.ips] == held
    assert [str(i) for i in out.kept] == kept
    assert out.reason == reason and out.ok == (reason == "Allocated")
    assert [str(i) for i in alloc.ips_of("ns/web")] == [i for i, _ in held]
    # What the status will show: nothing the Service showed is dropped unless it got what it asked for.
    assert {str(i) for i in out.shown} == {i for i, _ in held} | set(kept)
    if holder is not None:
        assert [str(i) for i in alloc.ips_of("ns/holder")] == ["192.0.2.1"]  # the healthy one never moves


def test_an_ip_given_up_in_this_sync_is_not_adopted_back():
    # The user changed ports so that it may no longer share: it gives its IP up and gets another,
    # although its status still shows the old one.
    alloc = Allocator([parse_pool("v4", {"addresses": ["192.0.2.0/30"]})])
    share = {names.ANN_ALLOW_SHARED_IP: "k"}
    allocation.allocate(alloc, service.parse(svc("a", annotations=share)), {})
    allocation.allocate(alloc, service.parse(svc("b", annotations=share, ports=[{"port": 81}])), {})
    changed = showing(svc("b", annotations=share), "192.0.2.0")  # now port 80 too: a clash
    out = allocation.allocate(alloc, service.parse(changed), {})
    assert out.ok and [str(i) for i, _ in out.ips] == ["192.0.2.1"] and out.kept == []
