"""The rules for two Services sharing one IP."""

from __future__ import annotations

import pytest

from leifur.ipam.sharing import incompatibility
from leifur.model.service import ServiceTraits

APP_A = frozenset({("app", "a")})
APP_B = frozenset({("app", "b")})


def svc(key, sharing_key="k", ports=(("TCP", 80),), policy="Cluster", selector=None):
    return ServiceTraits(key=key, sharing_key=sharing_key, ports=frozenset(ports), traffic_policy=policy,
                         selector=selector)


def both_ways(a, b):
    """The verdict must not depend on who asks: return both answers after checking they agree."""
    ab, ba = incompatibility(a, b), incompatibility(b, a)
    assert (ab is None) == (ba is None)
    return ab, ba


def test_same_key_different_ports_share():
    assert both_ways(svc("ns/a", ports=[("TCP", 80)]), svc("ns/b", ports=[("TCP", 443)])) == (None, None)


def test_same_port_number_different_protocol_share():
    assert both_ways(svc("ns/a", ports=[("TCP", 53)]), svc("ns/b", ports=[("UDP", 53)])) == (None, None)


def test_overlapping_ports_are_refused_and_named():
    ab, _ = both_ways(svc("ns/a", ports=[("TCP", 80), ("TCP", 8080)]), svc("ns/b", ports=[("TCP", 80)]))
    assert ab == "port 80/TCP is used by both"
    ab, _ = both_ways(svc("ns/a", ports=[("TCP", 80), ("UDP", 53)]), svc("ns/b", ports=[("UDP", 53), ("TCP", 80)]))
    assert ab == "ports 53/UDP, 80/TCP are used by both"


def test_no_sharing_key_is_refused():
    ab, ba = both_ways(svc("ns/a"), svc("ns/b", sharing_key=None, ports=[("TCP", 443)]))
    assert ab is not None and "ns/b holds it and does not share" in ab
    assert ba is not None and "ns/b" in ba and "sharing" in ba
    ab, _ = both_ways(svc("ns/a", sharing_key=None), svc("ns/b", sharing_key=None, ports=[("TCP", 443)]))
    assert ab is not None


def test_different_sharing_keys_are_refused():
    ab, _ = both_ways(svc("ns/a", sharing_key="x"), svc("ns/b", sharing_key="y", ports=[("TCP", 443)]))
    assert ab is not None and "sharing keys differ" in ab


def test_cluster_with_local_is_refused_with_explanation():
    ab, ba = both_ways(svc("ns/a", policy="Cluster"),
                       svc("ns/b", ports=[("TCP", 443)], policy="Local", selector=APP_A))
    assert ab is not None and "ns/b has externalTrafficPolicy Local and ns/a Cluster" in ab
    assert ab == ba


def test_local_with_local_needs_the_same_selector():
    a = svc("ns/a", policy="Local", selector=APP_A)
    assert both_ways(a, svc("ns/b", ports=[("TCP", 443)], policy="Local", selector=APP_A)) == (None, None)
    ab, _ = both_ways(a, svc("ns/b", ports=[("TCP", 443)], policy="Local", selector=APP_B))
    assert ab is not None and "selectors differ" in ab
    ab, _ = both_ways(a, svc("ns/b", ports=[("TCP", 443)], policy="Local", selector=None))
    assert ab is not None and "pod selector" in ab
    ab, _ = both_ways(svc("ns/a", policy="Local"), svc("ns/b", ports=[("TCP", 443)], policy="Local"))
    assert ab is not None


def test_a_service_is_compatible_with_itself():
    a = svc("ns/a", sharing_key=None)
    assert incompatibility(a, svc("ns/a", sharing_key=None, policy="Local")) is None


def test_traits_normalise_their_inputs():
    t = ServiceTraits("ns/a", ports=[("TCP", 80), ("TCP", 80)], selector={"app": "a"})
    assert t.ports == frozenset({("TCP", 80)}) and t.selector == APP_A
    assert hash(t) == hash(ServiceTraits("ns/a", ports=frozenset({("TCP", 80)}), selector=APP_A))
    with pytest.raises(ValueError, match="traffic policy"):
        ServiceTraits("ns/a", traffic_policy="local")
