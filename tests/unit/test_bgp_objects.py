"""BGPPeer, BGPAdvertisement and BFDProfile specs: what parses, and the message for what does not."""

from __future__ import annotations

import re

import pytest

from leifur.announce.bgp_objects import (
    parse_bfd_profile,
    parse_bgp_advertisement,
    parse_duration,
    parse_peer,
)

# name, text -> seconds
DURATIONS = [("seconds", "90s", 90), ("minutes and seconds", "1m30s", 90), ("milliseconds", "500ms", 0.5),
             ("fraction", "1.5s", 1.5), ("hours", "1h", 3600), ("zero", "0s", 0)]


@pytest.mark.parametrize("text,want", [c[1:] for c in DURATIONS], ids=[c[0] for c in DURATIONS])
def test_durations(text, want):
    assert parse_duration(text, "f") == want


@pytest.mark.parametrize("text", ["", "90", "ninety seconds", "1d", "-5s", "5s extra"])
def test_a_bad_duration_names_the_field(text):
    with pytest.raises(ValueError, match=r"spec\.holdTime"):
        parse_duration(text, "spec.holdTime")


BASE = {"peerAddress": "203.0.113.1", "myASN": 64512, "peerASN": 64500}

# name, spec changes -> a word the error must contain (None: parses)
PEER_CASES = [
    ("minimal", {}, None),
    ("4-byte ASNs", {"myASN": 4200000000, "peerASN": 4294967295}, None),
    ("ipv6 peer", {"peerAddress": "2001:db8::1"}, None),
    ("hold 0 disables keepalives", {"holdTime": "0s"}, None),
    ("missing peerAddress", {"peerAddress": None}, "spec.peerAddress"),
    ("peerAddress not an IP", {"peerAddress": "router.example"}, "spec.peerAddress"),
    ("ASN zero", {"myASN": 0}, "spec.myASN"),
    ("ASN too big", {"peerASN": 4294967296}, "spec.peerASN"),
    ("ASN as text", {"peerASN": "64500"}, "spec.peerASN"),
    ("missing ASN", {"myASN": None}, "spec.myASN is required"),
    ("port out of range", {"peerPort": 70000}, "spec.peerPort"),
    ("hold below 3s", {"holdTime": "2s"}, "spec.holdTime"),
    ("keepalive not below hold", {"holdTime": "9s", "keepaliveTime": "9s"}, "spec.keepaliveTime"),
    ("source not an IP", {"sourceAddress": "eth0"}, "spec.sourceAddress"),
    ("router ID not IPv4", {"routerID": "2001:db8::1"}, "spec.routerID"),
    ("password secret without a name", {"passwordSecret": {"namespace": "x"}}, "spec.passwordSecret"),
    ("bad node selector", {"nodeSelectors": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]},
     "spec.nodeSelectors[0]"),
]


@pytest.mark.parametrize("change,error", [c[1:] for c in PEER_CASES], ids=[c[0] for c in PEER_CASES])
def test_peer_specs(change, error):
    spec = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    obj = {"metadata": {"name": "r1"}, "spec": spec}
    if error is None:
        assert parse_peer(obj).name == "r1"
    else:
        with pytest.raises(ValueError, match=re.escape(error)):
            parse_peer(obj)


def test_peer_timers_default_like_bgp_and_keepalive_follows_a_short_hold():
    p = parse_peer({"metadata": {"name": "r1"}, "spec": BASE})
    assert (p.port, p.hold_time_s, p.keepalive_time_s) == (179, 90, 30)
    p = parse_peer({"metadata": {"name": "r1"}, "spec": {**BASE, "holdTime": "9s"}})
    assert (p.hold_time_s, p.keepalive_time_s) == (9, 3)


# name, spec -> (standard, large) communities, or a word of the error
ADVERTISEMENT_CASES = [
    ("no communities", {}, ((), ())),
    ("standard and large, deduplicated and ordered", {"communities": ["65000:20", "65000:3", "large:1:2:3",
                                                                      "65000:03"]},
     (("65000:3", "65000:20"), ("1:2:3",))),
    ("standard half over 16 bits", {"communities": ["65536:1"]}, "65536:1"),
    ("large part over 32 bits", {"communities": ["large:4294967296:1:1"]}, "large:4294967296:1:1"),
    ("not a community", {"communities": ["no-export"]}, "no-export"),
    ("aggregation too long", {"aggregationLength": 33}, "spec.aggregationLength"),
    ("v6 aggregation too long", {"aggregationLengthV6": 129}, "spec.aggregationLengthV6"),
    ("local preference negative", {"localPref": -1}, "spec.localPref"),
]


@pytest.mark.parametrize("spec,want", [c[1:] for c in ADVERTISEMENT_CASES], ids=[c[0] for c in ADVERTISEMENT_CASES])
def test_advertisement_specs(spec, want):
    obj = {"metadata": {"name": "a"}, "spec": spec}
    if isinstance(want, str):
        with pytest.raises(ValueError, match=re.escape(want)):
            parse_bgp_advertisement(obj)
    else:
        ad = parse_bgp_advertisement(obj)
        assert (ad.communities, ad.large_communities) == want


def test_bfd_profile_defaults_and_limits():
    assert parse_bfd_profile({"metadata": {"name": "p"}}).receive_interval_ms == 300
    with pytest.raises(ValueError, match=r"spec\.detectMultiplier"):
        parse_bfd_profile({"metadata": {"name": "p"}, "spec": {"detectMultiplier": 1}})
