"""`leifurctl validate` on BGPPeer, BGPAdvertisement and BFDProfile manifests: the CRD's schema and
the BGP plan's parser, offline. Each case is one object (or a few) and the one finding it must give,
at its field's line; a good object gives none. Names not in the files are warnings, as for pools:
they may exist in the cluster."""

from __future__ import annotations

import pytest
import yaml

from leifur.cli import validate

PEER = {"apiVersion": "leifur.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "tor"},
        "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1"}}
ADVERTISEMENT = {"apiVersion": "leifur.io/v1alpha1", "kind": "BGPAdvertisement", "metadata": {"name": "up"},
                 "spec": {}}
BFD = {"apiVersion": "leifur.io/v1alpha1", "kind": "BFDProfile", "metadata": {"name": "fast"}, "spec": {}}


def obj(base: dict, **spec) -> dict:
    out = {**base, "spec": {**base["spec"], **spec}}
    out["spec"] = {k: v for k, v in out["spec"].items() if v is not None}
    return out


def check(*objects: dict) -> validate.Report:
    text = "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)
    return validate.validate_text(text, "bgp.yaml")


GOOD = {
    "a peer with every field": [obj(PEER, peerPort=1179, sourceAddress="192.0.2.2", holdTime="9s",
                                    keepaliveTime="3s", routerID="198.51.100.1", ebgpMultiHop=True,
                                    nodeSelectors=[{"matchLabels": {"bgp": "yes"}}], bfdProfile="fast",
                                    passwordSecret={"name": "bgp", "namespace": "leifur-system"}), BFD],
    "an IPv6 peer with hold time 0": [obj(PEER, peerAddress="2001:db8::1", holdTime="0s")],
    "hold time in milliseconds of whole seconds": [obj(PEER, holdTime="90000ms")],
    "an empty advertisement": [ADVERTISEMENT],
    "an advertisement with every field": [obj(ADVERTISEMENT, ipAddressPools=["lan"], peers=["tor"],
                                              ipAddressPoolSelectors=[{"matchLabels": {"bgp": "yes"}}],
                                              nodeSelectors=[{"matchLabels": {"rack": "a"}}],
                                              communities=["65000:100", "large:4200000000:1:2"], localPref=200,
                                              aggregationLength=24, aggregationLengthV6=64),
                                          PEER, {"apiVersion": "leifur.io/v1alpha1", "kind": "IPAddressPool",
                                                 "metadata": {"name": "lan", "labels": {"bgp": "yes"}},
                                                 "spec": {"addresses": ["203.0.113.0/28"]}}],
    "a BFD profile with every field": [obj(BFD, receiveInterval=100, transmitInterval=100, detectMultiplier=3,
                                           echoInterval=50, echoMode=True, passiveMode=False, minimumTtl=254)],
}


@pytest.mark.parametrize("objects", GOOD.values(), ids=GOOD.keys())
def test_a_good_bgp_object_passes(objects):
    report = check(*objects)
    assert report.findings == [] and report.ok(strict=True)


# name -> (objects, level, the field path the message starts with, words in it)
BAD = {
    "peer without a spec": ([{**PEER, "spec": None}], "error", "spec is required", "peerAddress"),
    "peer ASN 0": ([obj(PEER, peerASN=0)], "error", "spec.peerASN", "from 1 to 4294967295"),
    "our ASN missing": ([obj(PEER, myASN=None)], "error", "spec.myASN", "required"),
    "peer address a host name": ([obj(PEER, peerAddress="router.example")], "error", "spec.peerAddress",
                                 "not an IP address"),
    "port 0": ([obj(PEER, peerPort=0)], "error", "spec.peerPort", "from 1 to 65535"),
    "hold time without a unit": ([obj(PEER, holdTime="90")], "error", "spec.holdTime", "is not a duration"),
    "hold time in fractions": ([obj(PEER, holdTime="3500ms")], "error", "spec.holdTime", "whole number of seconds"),
    "hold time with a fraction written": ([obj(PEER, holdTime="1.5m")], "error", "spec.holdTime",
                                          "is not a duration"),
    "hold time of 2 s": ([obj(PEER, holdTime="2s")], "error", "spec.holdTime", "below 3s"),
    "hold time past 65535 s": ([obj(PEER, holdTime="20h")], "error", "spec.holdTime", "longer than 65535s"),
    "keepalive as long as the hold time": ([obj(PEER, holdTime="9s", keepaliveTime="9s")], "error",
                                           "spec.keepaliveTime", "shorter than spec.holdTime"),
    "router ID IPv6": ([obj(PEER, routerID="2001:db8::1")], "error", "spec.routerID", "not an IPv4 address"),
    "source of the other family": ([obj(PEER, sourceAddress="2001:db8::2")], "error", "spec.sourceAddress",
                                   "both must be of one family"),
    "multihop on iBGP": ([obj(PEER, peerASN=64512, ebgpMultiHop=True)], "error", "spec.ebgpMultiHop",
                         "myASN equals peerASN"),
    "multihop as text": ([obj(PEER, ebgpMultiHop="yes")], "error", "spec.ebgpMultiHop", "true or false"),
    "a plain-text password": ([obj(PEER, password="s3cret")], "error", "spec.password", "unknown field"),
    "password Secret without a namespace": ([obj(PEER, passwordSecret={"name": "bgp"})], "error",
                                            "spec.passwordSecret.namespace", "is required"),
    "password Secret where the agents cannot read it": (
        [obj(PEER, passwordSecret={"name": "bgp", "namespace": "metallb-system"})], "warning",
        "spec.passwordSecret.namespace", "only in Leifur's namespace"),
    "a BFD profile not in the files": ([obj(PEER, bfdProfile="fsat"), BFD], "warning", "spec.bfdProfile",
                                       "BFDProfile 'fsat' is not in the files given (BFDProfiles there: fast); "
                                       "did you mean 'fast'?"),
    "a bad node selector": ([obj(PEER, nodeSelectors=[{"matchExpressions": [{"key": "a", "operator": "Is"}]}])],
                            "error", "spec.nodeSelectors[0]", "operator 'Is'"),
    "community without a colon": ([obj(ADVERTISEMENT, communities=["65000"])], "error", "spec.communities",
                                  "neither A:B nor large:A:B:C"),
    "standard community past 16 bits": ([obj(ADVERTISEMENT, communities=["65536:1"])], "error",
                                        "spec.communities", "at most 65535"),
    "large community past 32 bits": ([obj(ADVERTISEMENT, communities=["large:4294967296:0:0"])], "error",
                                     "spec.communities", "at most 4294967295"),
    "too many communities": ([obj(ADVERTISEMENT, communities=[f"65000:{i}" for i in range(65)])], "error",
                             "spec.communities", "at most 64"),
    "IPv4 aggregation past 32": ([obj(ADVERTISEMENT, aggregationLength=33)], "error", "spec.aggregationLength",
                                 "from 0 to 32"),
    "IPv6 aggregation past 128": ([obj(ADVERTISEMENT, aggregationLengthV6=129)], "error",
                                  "spec.aggregationLengthV6", "from 0 to 128"),
    "local preference negative": ([obj(ADVERTISEMENT, localPref=-1)], "error", "spec.localPref", "from 0"),
    "peers not a list": ([obj(ADVERTISEMENT, peers="tor")], "error", "spec.peers", "must be a list"),
    "a misspelt field": ([obj(ADVERTISEMENT, comunities=["65000:1"])], "error", "spec.comunities",
                         "did you mean 'communities'?"),
    "a peer not in the files": ([obj(ADVERTISEMENT, peers=["tor-b"]), PEER], "warning", "spec.peers[0]",
                                "BGPPeer 'tor-b' is not in the files given"),
    "a pool not in the files": ([obj(ADVERTISEMENT, ipAddressPools=["lan"])], "warning", "spec.ipAddressPools[0]",
                                "pool 'lan' is not in the files given"),
    "BFD interval below 10 ms": ([obj(BFD, receiveInterval=5)], "error", "spec.receiveInterval", "from 10 to 60000"),
    "BFD multiplier 1": ([obj(BFD, detectMultiplier=1)], "error", "spec.detectMultiplier", "from 2 to 255"),
    "BFD minimum TTL 255": ([obj(BFD, minimumTtl=255)], "error", "spec.minimumTtl", "from 1 to 254"),
    "BFD echo mode as text": ([obj(BFD, echoMode="on")], "error", "spec.echoMode", "true or false"),
}


@pytest.mark.parametrize("objects, level, field, says", BAD.values(), ids=BAD.keys())
def test_a_bad_bgp_object_gets_one_finding_at_its_field(objects, level, field, says):
    report = check(*objects)
    (finding,) = report.findings
    assert (finding.level, finding.kind) == (level, objects[0]["kind"]), finding
    assert finding.message.startswith(field) and says in finding.message, finding.message
    assert report.ok() is (level == "warning")
    # The line is the field's: the first document's spec starts at line 5.
    if field.startswith("spec."):
        assert finding.line is not None and finding.line >= 5, finding


def test_what_the_schema_and_the_plan_both_refuse_is_reported_once_with_every_schema_problem():
    report = check(obj(PEER, holdTime="3500ms", keepaliveTime="1.5s", password="x"))
    messages = sorted(f.message for f in report.findings)
    assert len(messages) == 3, messages
    assert messages[0].startswith("spec.holdTime: 3500ms is not a whole number of seconds")
    assert messages[1].startswith("spec.keepaliveTime: '1.5s' is not a duration")
    assert messages[2].startswith("spec.password: unknown field")


def test_the_summary_counts_bgp_kinds():
    report = check(PEER, ADVERTISEMENT, BFD)
    assert validate.render(report).splitlines()[-1] == (
        "OK: 1 BGPPeer, 1 BGPAdvertisement, 1 BFDProfile in 1 file: no problems")
