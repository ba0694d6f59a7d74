"""MetalLB's objects translated into Leifur's (leifur/cli/metallb.py): what each field becomes, and what is reported.

Each case is MetalLB objects in, and out: the Leifur objects (compared whole) and the findings
as (level, kind, field, a phrase of the message). The translation's output is also run through
the real `leifurctl validate`, which must accept it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from leifur.cli import metallb, validate
from leifur.cli.metallb import NOT_TRANSLATED, NOTE, Source

NS = "metallb-system"
MLB = "metallb.io/v1beta1"
OURS = "leifur.io/v1alpha1"
ANY_INTERFACE = (NOTE, "L2Advertisement", "spec.interfaces", "no interfaces given")


def mlb(kind: str, name: str, spec: dict | None = None, *, api_version: str = MLB, namespace: str | None = NS,
        **metadata: Any) -> dict:
    meta: dict = {"name": name, **metadata}
    if namespace is not None:
        meta["namespace"] = namespace
    obj: dict = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    if spec is not None:
        obj["spec"] = spec
    return obj


def ours(kind: str, name: str, spec: dict, labels: dict | None = None) -> dict:
    meta: dict = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": OURS, "kind": kind, "metadata": meta, "spec": spec}


def pool(name: str = "web", spec: dict | None = None, **kw: Any) -> dict:
    return mlb("IPAddressPool", name, {"addresses": ["192.0.2.0/28"]} if spec is None else spec, **kw)


def everywhere(name: str = "l2") -> dict:
    """An L2Advertisement for every pool on eth0 (so that no finding comes from it)."""
    return mlb("L2Advertisement", name, {"interfaces": ["eth0"]})


EVERYWHERE = ours("L2Advertisement", "l2", {"interfaces": ["eth0"]})
PEER = {"myASN": 64500, "peerASN": 64501, "peerAddress": "192.0.2.254"}


def peer(name: str = "router", **spec: Any) -> dict:
    return mlb("BGPPeer", name, {**PEER, **spec}, api_version="metallb.io/v1beta2")


@dataclass
class Case:
    id: str
    given: list[dict]
    objects: list[dict]
    findings: list[tuple[str, str, str, str]] = field(default_factory=list)
    skipped: int = 0


BGP_CASES = [
    Case("a peer's fields are copied, and its BFD profile's",
         [peer(peerPort=1179, sourceAddress="192.0.2.1", holdTime="90s", keepaliveTime="30s", routerID="198.51.100.1",
               nodeSelectors=[{"matchLabels": {"bgp": "yes"}}], bfdProfile="fast", ebgpMultiHop=True),
          mlb("BFDProfile", "fast", {"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3,
                                     "echoInterval": 50, "echoMode": False, "passiveMode": True, "minimumTtl": 254})],
         [ours("BFDProfile", "fast", {"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3,
                                      "echoInterval": 50, "echoMode": False, "passiveMode": True, "minimumTtl": 254}),
          ours("BGPPeer", "router", {**PEER, "peerPort": 1179, "sourceAddress": "192.0.2.1", "routerID": "198.51.100.1",
                                     "nodeSelectors": [{"matchLabels": {"bgp": "yes"}}], "bfdProfile": "fast",
                                     "ebgpMultiHop": True, "holdTime": "90s", "keepaliveTime": "30s"})]),
    Case("a peer as MetalLB's API stores it: the unused fields Leifur lacks are dropped without a finding",
         [peer(peerPort=179, disableMP=False, dualStackAddressFamily=False, enableGracefulRestart=False,
               passwordSecret={}, password="")],
         [ours("BGPPeer", "router", {**PEER, "peerPort": 179})]),
    Case("MetalLB's keepalive of a third of the hold time is written out",
         [peer(holdTime="3m")],
         [ours("BGPPeer", "router", {**PEER, "holdTime": "3m", "keepaliveTime": "60s"})],
         [(NOTE, "BGPPeer", "spec.keepaliveTime", "every third of the hold time: written out as 60s")]),
    Case("MetalLB's hold time of three keepalives is written out",
         [peer(keepaliveTime="20s")],
         [ours("BGPPeer", "router", {**PEER, "holdTime": "60s", "keepaliveTime": "20s"})],
         [(NOTE, "BGPPeer", "spec.holdTime", "three keepalives: written out as 60s")]),
    Case("a time in fractions of a second is rounded down, as MetalLB does; Go's long form is kept",
         [peer(holdTime="1m30.5s", keepaliveTime="0h0m30s")],
         [ours("BGPPeer", "router", {**PEER, "holdTime": "90s", "keepaliveTime": "0h0m30s"})],
         [(NOTE, "BGPPeer", "spec.holdTime", "1m30.5s is written as 90s")]),
    Case("a keepalive as long as the hold time, which MetalLB allows, is not translated",
         [peer(holdTime="90s", keepaliveTime="90s")],
         [ours("BGPPeer", "router", {**PEER, "holdTime": "90s"})],
         [(NOT_TRANSLATED, "BGPPeer", "spec.keepaliveTime", "Leifur needs it shorter")]),
    Case("a plain-text password is not translated",
         [peer(password="s3cret")],
         [ours("BGPPeer", "router", PEER)],
         [(NOT_TRANSLATED, "BGPPeer", "spec.password", "only from Secrets")]),
    Case("a password Secret is named in Leifur's namespace, with a note to copy it there",
         [peer(passwordSecret={"name": "bgp-pass", "namespace": NS})],
         [ours("BGPPeer", "router", {**PEER, "passwordSecret": {"name": "bgp-pass", "namespace": "leifur-system"}})],
         [(NOTE, "BGPPeer", "spec.passwordSecret", f"MetalLB reads Secret {NS}/bgp-pass; Leifur's agents read "
                                                   "Secrets only in leifur-system: copy it there")]),
    Case("a peer over an interface, with a dynamic ASN, or in a VRF is not translated",
         [mlb("BGPPeer", "a-unnumbered", {"myASN": 64500, "peerASN": 64501, "interface": "eth1"},
              api_version="metallb.io/v1beta2"),
          mlb("BGPPeer", "b-dynamic", {"myASN": 64500, "dynamicASN": "external", "peerAddress": "192.0.2.254"},
              api_version="metallb.io/v1beta2"),
          peer("c-vrf", vrf="red")],
         [],
         [(NOT_TRANSLATED, "BGPPeer", "spec.interface", "needs a peerAddress"),
          (NOT_TRANSLATED, "BGPPeer", "spec.dynamicASN", "needs the peerASN"),
          (NOT_TRANSLATED, "BGPPeer", "spec.vrf", "main routing table")]),
    Case("connect time, graceful restart, disableMP and dual-stack families have no counterpart",
         [peer(connectTime="5s", enableGracefulRestart=True, disableMP=True, dualStackAddressFamily=True)],
         [ours("BGPPeer", "router", PEER)],
         [(NOT_TRANSLATED, "BGPPeer", f"spec.{key}", f"has no {key}")
          for key in ("connectTime", "enableGracefulRestart", "disableMP", "dualStackAddressFamily")]),
    Case("a peer Leifur would refuse is not translated, with validate's reason",
         [peer(peerASN=64500, ebgpMultiHop=True)],
         [],
         [(NOT_TRANSLATED, "BGPPeer", "", "myASN equals peerASN (iBGP)")]),
    Case("a v1beta1 BGPPeer is not read",
         [mlb("BGPPeer", "router", PEER)],
         [],
         [(NOT_TRANSLATED, "BGPPeer", "apiVersion", "BGPPeer as metallb.io/v1beta2 only")]),
    Case("a BGP advertisement's fields are copied",
         [pool(labels={"tier": "web"}), peer(), mlb("BGPAdvertisement", "up", {
             "ipAddressPools": ["web"], "ipAddressPoolSelectors": [{"matchLabels": {"tier": "web"}}],
             "nodeSelectors": [{"matchLabels": {"rack": "a"}}], "peers": ["router"],
             "communities": ["65000:100", "large:4200000000:1:2"], "localPref": 100, "aggregationLength": 32,
             "aggregationLengthV6": 128})],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}, {"tier": "web"}),
          ours("BGPPeer", "router", PEER),
          ours("BGPAdvertisement", "up", {
              "ipAddressPools": ["web"], "ipAddressPoolSelectors": [{"matchLabels": {"tier": "web"}}],
              "nodeSelectors": [{"matchLabels": {"rack": "a"}}], "peers": ["router"], "aggregationLength": 32,
              "aggregationLengthV6": 128, "communities": ["65000:100", "large:4200000000:1:2"], "localPref": 100})]),
    Case("Community aliases are written as their values; an alias no Community defines is not translated",
         [mlb("Community", "aliases", {"communities": [{"name": "no-export", "value": "65535:65281"}]}),
          mlb("BGPAdvertisement", "up", {"communities": ["no-export", "65000:1", "gold"]})],
         [ours("BGPAdvertisement", "up", {"communities": ["65535:65281", "65000:1"]})],
         [(NOTE, "BGPAdvertisement", "spec.communities[0]", "'no-export' of a Community object is written as its "
                                                             "value 65535:65281"),
          (NOT_TRANSLATED, "BGPAdvertisement", "spec.communities[2]", "no Community object defines it"),
          (NOTE, "Community", "", "Leifur has no Community kind")]),
    Case("localPref 0 is MetalLB's 'none' and is left out",
         [mlb("BGPAdvertisement", "up", {"localPref": 0})],
         [ours("BGPAdvertisement", "up", {})],
         [(NOTE, "BGPAdvertisement", "spec.localPref", "MetalLB's 'none'")]),
    Case("a BGP advertisement naming a peer that is not among MetalLB's objects gets validate's warning as a note",
         [mlb("BGPAdvertisement", "up", {"peers": ["gone"]})],
         [ours("BGPAdvertisement", "up", {"peers": ["gone"]})],
         [(NOTE, "BGPAdvertisement", "", "BGPPeer 'gone' is not in the files given")]),
    Case("a field MetalLB's BGPAdvertisement does not have is not translated",
         [mlb("BGPAdvertisement", "up", {"interfaces": ["eth0"]})],
         [ours("BGPAdvertisement", "up", {})],
         [(NOT_TRANSLATED, "BGPAdvertisement", "spec.interfaces", "not a field of MetalLB's BGPAdvertisement")]),
    Case("a BFD profile Leifur would refuse is not translated",
         [mlb("BFDProfile", "fast", {"receiveInterval": 5})],
         [],
         [(NOT_TRANSLATED, "BFDProfile", "", "spec.receiveInterval")]),
]

CASES = [
    Case("a pool keeps its name and labels, loses its namespace, status and annotations",
         [pool(spec={"addresses": ["192.0.2.0/28", "198.51.100.10-198.51.100.20", "2001:db8::/120"]},
               labels={"tier": "web"}, annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"},
               uid="1234", resourceVersion="7") | {"status": {"assignedIPv4": 3}},
          everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28", "198.51.100.10-198.51.100.20",
                                                      "2001:db8::/120"]}, {"tier": "web"}), EVERYWHERE]),
    Case("autoAssign and avoidBuggyIPs are copied",
         [pool(spec={"addresses": ["192.0.2.0/24"], "autoAssign": False, "avoidBuggyIPs": True}), everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/24"], "autoAssign": False, "avoidBuggyIPs": True}),
          EVERYWHERE]),
    Case("a CIDR with host bits is written as the network MetalLB reads",
         [pool(spec={"addresses": ["192.0.2.5/28", "2001:db8::1/64"]}), everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28", "2001:db8::/64"]}), EVERYWHERE],
         [(NOTE, "IPAddressPool", "spec.addresses[0]", "MetalLB reads it as 192.0.2.0/28"),
          (NOTE, "IPAddressPool", "spec.addresses[1]", "MetalLB reads it as 2001:db8::/64")]),
    Case("serviceAllocation: priority, namespaces and both kinds of selectors are copied",
         [pool(spec={"addresses": ["192.0.2.0/28"], "serviceAllocation": {
             "priority": 5, "namespaces": ["web"], "namespaceSelectors": [{"matchLabels": {"team": "a"}}],
             "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}]}}),
          everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"], "serviceAllocation": {
             "priority": 5, "namespaces": ["web"], "namespaceSelectors": [{"matchLabels": {"team": "a"}}],
             "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}]}}),
          EVERYWHERE]),
    Case("priority 0 is MetalLB's 'none' and is left out",
         [pool(spec={"addresses": ["192.0.2.0/28"], "serviceAllocation": {"priority": 0, "namespaces": ["web"]}}),
          everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"], "serviceAllocation": {"namespaces": ["web"]}}),
          EVERYWHERE],
         [(NOTE, "IPAddressPool", "spec.serviceAllocation.priority", "MetalLB's 'no priority'")]),
    Case("a negative priority is not translated",
         [pool(spec={"addresses": ["192.0.2.0/28"], "serviceAllocation": {"priority": -1}}), everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"], "serviceAllocation": {}}), EVERYWHERE],
         [(NOT_TRANSLATED, "IPAddressPool", "spec.serviceAllocation.priority", "negative priority")]),
    Case("an empty serviceAllocation stays: it still reserves the pool ahead of pools without one",
         [pool(spec={"addresses": ["192.0.2.0/28"], "serviceAllocation": {}}), everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"], "serviceAllocation": {}}), EVERYWHERE]),
    Case("a field MetalLB does not have is not translated",
         [pool(spec={"addresses": ["192.0.2.0/28"], "autoassign": False,
                     "serviceAllocation": {"priority": 1, "namespace": ["x"]}}), everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"], "serviceAllocation": {"priority": 1}}),
          EVERYWHERE],
         [(NOT_TRANSLATED, "IPAddressPool", "spec.autoassign", "not a field of MetalLB's IPAddressPool"),
          (NOT_TRANSLATED, "IPAddressPool", "spec.serviceAllocation.namespace", "not a field")]),
    Case("a pool Leifur would refuse is not translated, with validate's reason",
         [pool(spec={"addresses": ["192.0.2.300/28"]}), everywhere()],
         [EVERYWHERE],
         [(NOT_TRANSLATED, "IPAddressPool", "", "Leifur would refuse the translation")]),
    Case("an advertisement's pools, pool selectors, node selectors and interfaces are copied",
         [pool(labels={"tier": "web"}), mlb("L2Advertisement", "l2", {
             "ipAddressPools": ["web"], "ipAddressPoolSelectors": [{"matchLabels": {"tier": "web"}}],
             "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "n1"}}], "interfaces": ["eth0", "bond0"]})],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}, {"tier": "web"}),
          ours("L2Advertisement", "l2", {
              "ipAddressPools": ["web"], "ipAddressPoolSelectors": [{"matchLabels": {"tier": "web"}}],
              "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "n1"}}],
              "interfaces": ["eth0", "bond0"]})]),
    Case("an advertisement without interfaces gets a note: the default interfaces differ",
         [pool(), mlb("L2Advertisement", "l2", {})],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}), ours("L2Advertisement", "l2", {})],
         [ANY_INTERFACE]),
    Case("an advertisement with no spec at all means every pool, as in MetalLB",
         [pool(), mlb("L2Advertisement", "l2")],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}), ours("L2Advertisement", "l2", {})],
         [ANY_INTERFACE]),
    Case("an advertisement field MetalLB's L2Advertisement does not have is not translated",
         [pool(), mlb("L2Advertisement", "l2", {"interfaces": ["eth0"], "peers": ["r1"]})],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}), EVERYWHERE],
         [(NOT_TRANSLATED, "L2Advertisement", "spec.peers", "not a field of MetalLB's L2Advertisement")]),
    Case("an advertisement naming a pool that is not among MetalLB's objects gets validate's warning as a note",
         [pool(), mlb("L2Advertisement", "l2", {"ipAddressPools": ["web", "gone"], "interfaces": ["eth0"]})],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}),
          ours("L2Advertisement", "l2", {"ipAddressPools": ["web", "gone"], "interfaces": ["eth0"]})],
         [(NOTE, "L2Advertisement", "", "pool 'gone' is not in the files given")]),
    Case("a pool no L2Advertisement selects gets a note",
         [pool(), pool("other", {"addresses": ["198.51.100.0/28"]}),
          mlb("L2Advertisement", "l2", {"ipAddressPools": ["web"], "interfaces": ["eth0"]})],
         [ours("IPAddressPool", "other", {"addresses": ["198.51.100.0/28"]}),
          ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}),
          ours("L2Advertisement", "l2", {"ipAddressPools": ["web"], "interfaces": ["eth0"]})],
         [(NOTE, "IPAddressPool", "", "no L2Advertisement or BGPAdvertisement selects this pool")]),
    Case("a pool advertised only over BGP is announced: no note",
         [pool(labels={"via": "bgp"}), mlb("BGPAdvertisement", "bgp", {"ipAddressPoolSelectors": [
             {"matchLabels": {"via": "bgp"}}]})],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}, {"via": "bgp"}),
          ours("BGPAdvertisement", "bgp", {"ipAddressPoolSelectors": [{"matchLabels": {"via": "bgp"}}]})]),
    *BGP_CASES,
    Case("MetalLB's status objects are noted, not translated and not counted as lost",
         [pool(), everywhere(), mlb("ConfigurationState", "controller")],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}), EVERYWHERE],
         [(NOTE, "ConfigurationState", "", "nothing to translate")]),
    Case("the old AddressPool kind is not translated",
         [mlb("AddressPool", "old", {"protocol": "layer2", "addresses": ["192.0.2.0/28"]})],
         [],
         [(NOT_TRANSLATED, "AddressPool", "", "removed in v0.14")]),
    Case("an unknown metallb.io kind is not translated",
         [mlb("IPPool", "x", {})],
         [],
         [(NOT_TRANSLATED, "IPPool", "kind", "not a kind of MetalLB's configuration")]),
    Case("a version MetalLB does not serve these kinds in is not translated",
         [pool(api_version="metallb.io/v1beta2")],
         [],
         [(NOT_TRANSLATED, "IPAddressPool", "apiVersion", "metallb.io/v1beta1 only")]),
    Case("an object outside MetalLB's namespace is not translated; one without a namespace is",
         [pool("elsewhere", namespace="team-a"), pool("here", namespace=None), everywhere()],
         [ours("IPAddressPool", "here", {"addresses": ["192.0.2.0/28"]}), EVERYWHERE],
         [(NOT_TRANSLATED, "IPAddressPool", "metadata.namespace", "pass --namespace team-a")]),
    Case("two pools of one name in different namespaces: only the one in MetalLB's namespace",
         [pool("web", {"addresses": ["198.51.100.0/28"]}, namespace="team-a"), pool("web"), everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}), EVERYWHERE],
         [(NOT_TRANSLATED, "IPAddressPool", "metadata.namespace", "only from its own namespace")]),
    Case("an object defined twice: the later one is translated, as applying both would keep it",
         [pool(spec={"addresses": ["198.51.100.0/28"]}), pool(), everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}), EVERYWHERE],
         [(NOT_TRANSLATED, "IPAddressPool", "", "defined again at src:1")]),
    Case("an object without a name is not translated",
         [mlb("IPAddressPool", "", {"addresses": ["192.0.2.0/28"]})],
         [],
         [(NOT_TRANSLATED, "IPAddressPool", "metadata.name", "required")]),
    Case("objects that are not MetalLB's are skipped without a finding",
         [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "web"}},
          ours("IPAddressPool", "mine", {"addresses": ["192.0.2.0/28"]}), pool(), everywhere()],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}), EVERYWHERE],
         skipped=2),
]


def findings(result: metallb.Translation) -> list[tuple[str, str, str, str]]:
    return [(f.level, f.kind, f.field, f.message) for f in result.findings]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_translation(case: Case) -> None:
    result = metallb.translate([Source(o, f"src:{i}") for i, o in enumerate(case.given)], NS)
    assert result.objects == case.objects
    got = findings(result)
    assert len(got) == len(case.findings), got
    for (level, kind, fld, phrase), (glevel, gkind, gfield, message) in zip(case.findings, got, strict=True):
        assert (glevel, gkind, gfield) == (level, kind, fld), got
        assert phrase in message, got
    assert len(result.skipped) == case.skipped
    assert result.untranslated == sum(1 for f in case.findings if f[0] == NOT_TRANSLATED)


@pytest.mark.parametrize("case", [c for c in CASES if c.objects], ids=lambda c: c.id)
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_every_translation_passes_validate(case: Case, fmt: str, tmp_path) -> None:
    result = metallb.translate([Source(o, "src") for o in case.given], NS)
    path = tmp_path / f"out.{fmt}"
    path.write_text(metallb.dump(result.objects, fmt))
    report = validate.validate([str(path)])
    assert report.errors == 0, [f.message for f in report.findings]
    assert [(d.kind, d.name) for d in report.objects] == [(o["kind"], o["metadata"]["name"]) for o in case.objects]


def test_the_findings_name_the_namespace_and_where_each_object_came_from() -> None:
    result = metallb.translate([Source(mlb("BGPPeer", "r", {}, api_version="metallb.io/v1beta2"), "f.yaml:12")])
    assert [(f.name, f.origin) for f in result.findings] == [(f"{NS}/r", "f.yaml:12")]
