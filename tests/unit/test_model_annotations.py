"""MetalLB's Service annotations read as aliases of ours: which spelling wins, and what is reported."""

from __future__ import annotations

import pytest

from leifur.model import annotations, names, service

POOL, IPS, SHARE = names.ANN_ADDRESS_POOL, names.ANN_LOAD_BALANCER_IPS, names.ANN_ALLOW_SHARED_IP

READ_CASES = [
    ("none-set", POOL, {}, None, POOL),
    ("ours-alone", POOL, {POOL: "a"}, "a", POOL),
    ("metallb-io-alone", POOL, {"metallb.io/address-pool": "m"}, "m", "metallb.io/address-pool"),
    ("the-old-prefix-alone", POOL, {"metallb.universe.tf/address-pool": "u"}, "u",
     "metallb.universe.tf/address-pool"),
    ("metallb-io-wins-over-the-old-prefix-as-in-metallb", POOL,
     {"metallb.universe.tf/address-pool": "u", "metallb.io/address-pool": "m"}, "m", "metallb.io/address-pool"),
    ("ours-wins-over-both", POOL,
     {"metallb.universe.tf/address-pool": "u", "metallb.io/address-pool": "m", POOL: "a"}, "a", POOL),
    ("presence-decides-even-when-empty", SHARE, {SHARE: "", "metallb.io/allow-shared-ip": "k"}, "", SHARE),
    ("metallbs-ips-spelling", IPS, {"metallb.io/loadBalancerIPs": "192.0.2.5"}, "192.0.2.5",
     "metallb.io/loadBalancerIPs"),
    ("metallbs-own-written-annotation-is-not-read", POOL, {"metallb.io/ip-allocated-from-pool": "m"}, None, POOL),
]


@pytest.mark.parametrize(("name", "given", "value", "source"), [c[1:] for c in READ_CASES],
                         ids=[c[0] for c in READ_CASES])
def test_which_spelling_is_read(name: str, given: dict, value: str | None, source: str) -> None:
    r = annotations.read(given, name)
    assert (r.value, r.source) == (value, source)


DISAGREEMENT_CASES = [
    ("agreeing-spellings-say-nothing", {POOL: "a", "metallb.io/address-pool": "a "}, []),
    ("ours-against-metallbs", {POOL: "a", "metallb.io/address-pool": "m"},
     ["metallb.io/address-pool='m' is ignored: leifur.io/address-pool='a' wins"]),
    ("metallbs-two-prefixes", {"metallb.io/allow-shared-ip": "k1", "metallb.universe.tf/allow-shared-ip": "k2"},
     ["metallb.universe.tf/allow-shared-ip='k2' is ignored: metallb.io/allow-shared-ip='k1' wins"]),
    ("one-line-per-ignored-spelling", {IPS: "192.0.2.1", "metallb.io/loadBalancerIPs": "192.0.2.2",
                                       "metallb.universe.tf/loadBalancerIPs": "192.0.2.3"},
     ["metallb.io/loadBalancerIPs='192.0.2.2' is ignored: leifur.io/load-balancer-ips='192.0.2.1' wins",
      "metallb.universe.tf/loadBalancerIPs='192.0.2.3' is ignored: leifur.io/load-balancer-ips='192.0.2.1' wins"]),
]


@pytest.mark.parametrize(("given", "notes"), [c[1:] for c in DISAGREEMENT_CASES],
                         ids=[c[0] for c in DISAGREEMENT_CASES])
def test_disagreements_are_reported(given: dict, notes: list[str]) -> None:
    assert annotations.disagreements(given) == notes


def lb(annotations_: dict[str, str], **spec) -> dict:
    return {"metadata": {"name": "web", "namespace": "ns", "annotations": annotations_},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "ipFamilies": ["IPv4", "IPv6"],
                     "ipFamilyPolicy": "PreferDualStack", **spec}}


def test_a_metallb_service_is_read_as_metallb_reads_it() -> None:
    req = service.parse(lb({"metallb.universe.tf/address-pool": "prod",
                            "metallb.io/loadBalancerIPs": "192.0.2.7,2001:db8::7",
                            "metallb.io/allow-shared-ip": "web"}))
    assert req.pool == "prod" and req.pool_from == "metallb.universe.tf/address-pool"
    assert {str(ip) for ip in req.requested.values()} == {"192.0.2.7", "2001:db8::7"}
    assert req.traits.sharing_key == "web" and req.notes == ()


def test_an_error_names_the_spelling_the_user_wrote() -> None:
    with pytest.raises(service.ServiceSpecError, match=r"metallb\.io/loadBalancerIPs"):
        service.parse(lb({"metallb.io/loadBalancerIPs": "192.0.2.7"}, loadBalancerIP="192.0.2.8"))
    with pytest.raises(service.ServiceSpecError, match=r"metallb\.universe\.tf/address-pool is empty"):
        service.parse(lb({"metallb.universe.tf/address-pool": " "}))
