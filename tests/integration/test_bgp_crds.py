"""BGPPeer, BGPAdvertisement and BFDProfile as the real API server serves them: each rule of their
schemas (CEL and OpenAPI) accepts a good object and refuses a bad one with a message that says what
is wrong (their descriptions in `kubectl explain`: tests/integration/test_crds.py)."""

from __future__ import annotations

import json
import uuid

import pytest
from kubernetes.client.rest import ApiException

from leifur.model import names

PLURALS = {names.BGP_PEER: names.BGPPEERS, names.BGP_ADVERTISEMENT: names.BGPADVERTISEMENTS,
           names.BFD_PROFILE: names.BFDPROFILES}
PEER = {"myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1"}


@pytest.fixture
def create(cluster):
    """Create an object of one of the three kinds for real; each one created is deleted after the test."""
    created: list[tuple[str, str]] = []

    def create(kind: str, spec: dict) -> dict:
        body = {"apiVersion": names.API_VERSION, "kind": kind,
                "metadata": {"name": f"cel-{uuid.uuid4().hex[:8]}"}, "spec": spec}
        # Strict, as kubectl asks: an unknown field is refused, not silently dropped.
        obj = cluster.custom.create_cluster_custom_object(names.GROUP, names.VERSION, PLURALS[kind], body,
                                                          field_validation="Strict")
        created.append((PLURALS[kind], body["metadata"]["name"]))
        return obj

    yield create
    for plural, name in created:
        cluster.custom.delete_cluster_custom_object(names.GROUP, names.VERSION, plural, name)


def peer(**changes) -> dict:
    spec = {**PEER, **changes}
    return {k: v for k, v in spec.items() if v is not None}


# (kind, spec, what the API server says): each rule refused once, named after what breaks it.
REFUSED = {
    "peer ASN 0": (names.BGP_PEER, peer(peerASN=0), "spec.peerASN: Invalid value: 0: spec.peerASN in body should "
                                                    "be greater than or equal to 1"),
    "our ASN past 32 bits": (names.BGP_PEER, peer(myASN=4294967296),
                             "spec.myASN in body should be less than or equal to 4294967295"),
    "no peer ASN": (names.BGP_PEER, peer(peerASN=None), "spec.peerASN: Required value"),
    "no peer address": (names.BGP_PEER, peer(peerAddress=None), "spec.peerAddress: Required value"),
    "peer address a host name": (names.BGP_PEER, peer(peerAddress="router.example.com"),
                                 "router.example.com is not an IP address"),
    "peer address with a prefix": (names.BGP_PEER, peer(peerAddress="192.0.2.1/24"),
                                   "192.0.2.1/24 is not an IP address"),
    "source address not an IP": (names.BGP_PEER, peer(sourceAddress="eth0"), "eth0 is not an IP address"),
    "source and peer of two families": (names.BGP_PEER, peer(sourceAddress="2001:db8::5"),
                                        "sourceAddress and peerAddress must be of the same family"),
    "port 0": (names.BGP_PEER, peer(peerPort=0), "spec.peerPort in body should be greater than or equal to 1"),
    "port past 65535": (names.BGP_PEER, peer(peerPort=65536),
                        "spec.peerPort in body should be less than or equal to 65535"),
    "hold time not a duration": (names.BGP_PEER, peer(holdTime="90"),
                                 "90 is not a duration such as 90s, 3m or 1m30s"),
    "hold time negative": (names.BGP_PEER, peer(holdTime="-90s"), "-90s is not a duration"),
    "hold time of 2 s": (names.BGP_PEER, peer(holdTime="2s"), "2s must be 0s (no keepalives) or from 3s to 65535s"),
    "hold time past 65535 s": (names.BGP_PEER, peer(holdTime="20h"), "20h must be 0s (no keepalives) or from 3s"),
    "hold time in fractions of a second": (names.BGP_PEER, peer(holdTime="3500ms"),
                                           "3500ms is not a whole number of seconds"),
    "keepalive as long as the hold time": (names.BGP_PEER, peer(holdTime="9s", keepaliveTime="9s"),
                                           "keepaliveTime (9s) must be shorter than holdTime (9s)"),
    "keepalive longer than the hold time": (names.BGP_PEER, peer(holdTime="30s", keepaliveTime="1m"),
                                            "keepaliveTime (1m) must be shorter than holdTime (30s)"),
    "keepalive not a duration": (names.BGP_PEER, peer(keepaliveTime="often"), "often is not a duration"),
    "keepalive in fractions of a second": (names.BGP_PEER, peer(keepaliveTime="1500ms"),
                                           "1500ms is not a whole number of seconds"),
    "router ID IPv6": (names.BGP_PEER, peer(routerID="2001:db8::1"), "2001:db8::1 is not an IPv4 address"),
    "router ID a number": (names.BGP_PEER, peer(routerID="1"), "1 is not an IPv4 address"),
    "password Secret without a namespace": (names.BGP_PEER, peer(passwordSecret={"name": "bgp"}),
                                            "spec.passwordSecret.namespace: Required value"),
    "a plain-text password": (names.BGP_PEER, peer(password="secret"), 'unknown field "spec.password"'),
    "multihop for iBGP": (names.BGP_PEER, peer(peerASN=64512, ebgpMultiHop=True),
                          "ebgpMultiHop is for eBGP sessions, but myASN equals peerASN (iBGP)"),
    "community without a colon": (names.BGP_ADVERTISEMENT, {"communities": ["65000"]},
                                  "65000 is neither a standard community A:B nor a large one large:A:B:C"),
    "community an alias name": (names.BGP_ADVERTISEMENT, {"communities": ["no-export"]},
                                "no-export is neither a standard community"),
    "standard community past 16 bits": (names.BGP_ADVERTISEMENT, {"communities": ["65000:100", "65536:1"]},
                                        "spec.communities[1]: Invalid value: \"string\": 65536:1: each part of a "
                                        "standard community is at most 65535"),
    "large community past 32 bits": (names.BGP_ADVERTISEMENT, {"communities": ["large:4294967296:1:2"]},
                                     "large:4294967296:1:2: each part of a large community is at most 4294967295"),
    "large community with two parts": (names.BGP_ADVERTISEMENT, {"communities": ["large:1:2"]},
                                       "large:1:2 is neither a standard community"),
    "local preference negative": (names.BGP_ADVERTISEMENT, {"localPref": -1},
                                  "spec.localPref in body should be greater than or equal to 0"),
    "IPv4 aggregation past 32": (names.BGP_ADVERTISEMENT, {"aggregationLength": 33},
                                 "spec.aggregationLength in body should be less than or equal to 32"),
    "IPv6 aggregation past 128": (names.BGP_ADVERTISEMENT, {"aggregationLengthV6": 129},
                                  "spec.aggregationLengthV6 in body should be less than or equal to 128"),
    "aggregation negative": (names.BGP_ADVERTISEMENT, {"aggregationLength": -1},
                             "spec.aggregationLength in body should be greater than or equal to 0"),
    "BFD receive interval below 10 ms": (names.BFD_PROFILE, {"receiveInterval": 9},
                                         "spec.receiveInterval in body should be greater than or equal to 10"),
    "BFD transmit interval past a minute": (names.BFD_PROFILE, {"transmitInterval": 60001},
                                            "spec.transmitInterval in body should be less than or equal to 60000"),
    "BFD multiplier 1": (names.BFD_PROFILE, {"detectMultiplier": 1},
                         "spec.detectMultiplier in body should be greater than or equal to 2"),
    "BFD echo interval below 10 ms": (names.BFD_PROFILE, {"echoInterval": 5},
                                      "spec.echoInterval in body should be greater than or equal to 10"),
    "BFD minimum TTL 255": (names.BFD_PROFILE, {"minimumTtl": 255},
                            "spec.minimumTtl in body should be less than or equal to 254"),
}


@pytest.mark.parametrize("kind, spec, refusal", REFUSED.values(), ids=REFUSED.keys())
def test_the_api_server_refuses_a_bad_bgp_object(cluster, create, kind, spec, refusal):
    with pytest.raises(ApiException) as refused:
        create(kind, spec)
    # 422 for what the schema refuses; 400 for an unknown field, refused while decoding.
    assert refused.value.status in (400, 422), refused.value.body
    message = json.loads(refused.value.body)["message"]
    assert refusal in message, message


# (kind, spec, what the stored object holds beyond the spec: the defaults the schema fills in, or a
# value the spec gave, shown again to be stored as written).
ACCEPTED = {
    "the smallest peer": (names.BGP_PEER, peer(), {"peerPort": 179}),
    "the largest ASNs, IPv6": (names.BGP_PEER, peer(myASN=4294967295, peerASN=1, peerAddress="2001:db8::1",
                                                    sourceAddress="2001:db8::2"), {"myASN": 4294967295}),
    "every field": (names.BGP_PEER, peer(peerPort=1179, sourceAddress="192.0.2.2", holdTime="9s",
                                         keepaliveTime="3s", routerID="198.51.100.1", ebgpMultiHop=True,
                                         nodeSelectors=[{"matchLabels": {"bgp": "yes"}}], bfdProfile="fast",
                                         passwordSecret={"name": "bgp", "namespace": "leifur-system"}),
                    {"peerPort": 1179, "holdTime": "9s"}),
    "hold time 0 with a keepalive": (names.BGP_PEER, peer(holdTime="0s", keepaliveTime="10s"), {"holdTime": "0s"}),
    "hold time 3 s": (names.BGP_PEER, peer(holdTime="3s", keepaliveTime="1s"), {"keepaliveTime": "1s"}),
    "hold time 65535 s, in minutes and seconds": (names.BGP_PEER, peer(holdTime="1092m15s"), {}),
    "hold time in whole seconds of milliseconds": (names.BGP_PEER, peer(holdTime="90000ms"), {}),
    "keepalive alone": (names.BGP_PEER, peer(keepaliveTime="20s"), {}),
    "iBGP without multihop": (names.BGP_PEER, peer(peerASN=64512, ebgpMultiHop=False), {}),
    "an empty advertisement": (names.BGP_ADVERTISEMENT, {}, {"aggregationLength": 32, "aggregationLengthV6": 128}),
    "communities at their limits": (names.BGP_ADVERTISEMENT,
                                    {"communities": ["0:0", "65535:65535", "large:4294967295:0:4294967295"]}, {}),
    "every advertisement field": (names.BGP_ADVERTISEMENT, {
        "ipAddressPools": ["lan"], "ipAddressPoolSelectors": [{"matchLabels": {"bgp": "yes"}}],
        "nodeSelectors": [{"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a"]}]}],
        "peers": ["tor-a"], "communities": ["64512:100"], "localPref": 4294967295,
        "aggregationLength": 0, "aggregationLengthV6": 64}, {"aggregationLength": 0}),
    "an empty BFD profile": (names.BFD_PROFILE, {}, {"receiveInterval": 300, "transmitInterval": 300,
                                                     "detectMultiplier": 3, "echoInterval": 50, "minimumTtl": 254}),
    "a fast BFD profile": (names.BFD_PROFILE, {"receiveInterval": 10, "transmitInterval": 60000,
                                              "detectMultiplier": 255, "echoMode": True, "passiveMode": True,
                                              "minimumTtl": 1}, {"detectMultiplier": 255}),
}


@pytest.mark.parametrize("kind, spec, stored", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_the_api_server_accepts_a_good_bgp_object(cluster, create, kind, spec, stored):
    obj = create(kind, spec)
    assert obj["spec"].items() >= {**spec, **stored}.items(), obj["spec"]

