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


@dataclass
class Case:
    id: str
    given: list[dict]
    objects: list[dict]
    findings: list[tuple[str, str, str, str]] = field(default_factory=list)
    skipped: int = 0


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
         [(NOTE, "IPAddressPool", "", "no L2Advertisement selects this pool")]),
    Case("a pool MetalLB advertises only over BGP: the BGPAdvertisement is not translated, the pool says so",
         [pool(labels={"via": "bgp"}), mlb("BGPAdvertisement", "bgp", {"ipAddressPoolSelectors": [
             {"matchLabels": {"via": "bgp"}}], "localPref": 100})],
         [ours("IPAddressPool", "web", {"addresses": ["192.0.2.0/28"]}, {"via": "bgp"})],
         [(NOT_TRANSLATED, "BGPAdvertisement", "", "no BGP mode"),
          (NOTE, "IPAddressPool", "", "MetalLB advertises it over BGP")]),
    Case("BGP objects are not translated",
         [mlb("BGPPeer", "router", {"myASN": 64500, "peerASN": 64501, "peerAddress": "192.0.2.254"},
              api_version="metallb.io/v1beta2"),
          mlb("BFDProfile", "fast", {"receiveInterval": 50}), mlb("Community", "c", {"communities": []})],
         [],
         [(NOT_TRANSLATED, "BFDProfile", "", "no BGP mode"), (NOT_TRANSLATED, "BGPPeer", "", "no BGP mode"),
          (NOT_TRANSLATED, "Community", "", "no BGP mode")]),
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
