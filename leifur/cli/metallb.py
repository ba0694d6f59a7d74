"""MetalLB's configuration (metallb.io) translated into Leifur's (leifur.io), with a report of what was not.

Pure: objects in, objects and findings out. `leifurctl migrate from-metallb` (cli/migrate.py)
reads the objects and prints the result.

MetalLB's objects are namespaced and it reads them only from its own namespace; Leifur's are
cluster-scoped. Only the objects of MetalLB's namespace are translated (those elsewhere have no
effect in MetalLB either), so two translated objects of one kind never share a name.

Findings have two levels:
- not translated: something MetalLB does that the Leifur objects will not do (an unknown field,
  an object in another namespace, a BGP feature Leifur lacks). The command fails unless told to
  accept it.
- note: translated, but worth knowing before the cutover (a value written differently with the
  same effect, or a default that differs between the two).

The BGP kinds are translated by leifur/cli/metallb_bgp.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from leifur.announce.election import parse_advertisement
from leifur.cli import output, validate
from leifur.model import names
from leifur.model.objects import Object

GROUP = "metallb.io"
DEFAULT_NAMESPACE = "metallb-system"
POOL = "IPAddressPool"
ADVERTISEMENT = "L2Advertisement"
TRANSLATED_KINDS = (POOL, ADVERTISEMENT, names.BFD_PROFILE, names.BGP_PEER, names.BGP_ADVERTISEMENT)
# Community aliases are not objects of Leifur's: they are written out where they are used.
COMMUNITY = "Community"
# Written by MetalLB itself, not configuration: nothing to translate, and nothing lost.
STATUS_KINDS = ("ConfigurationState", "ServiceL2Status", "ServiceBGPStatus")
# The version MetalLB serves each kind in (v0.13 to v0.15); BGPPeer's v1beta1 is older, and
# `kubectl get bgppeers.v1beta2.metallb.io` shows any peer in v1beta2.
VERSIONS = {names.BGP_PEER: "v1beta2"}
TRANSLATED_VERSION = "v1beta1"

NOT_TRANSLATED = "not translated"
NOTE = "note"

# MetalLB v0.15's spec fields (config/crd/bases in its module).
_POOL_FIELDS = ("addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation")
_ALLOCATION_FIELDS = ("priority", "namespaces", "namespaceSelectors", "serviceSelectors")
_ADVERTISEMENT_FIELDS = ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "interfaces")

_INTERFACES_DEFAULT = (
    "no interfaces given: MetalLB answers on every up, ARP-capable interface that is not enslaved to a bridge or "
    "bond; Leifur answers on the interfaces carrying an address of the node in a subnet that contains the IP. "
    "If the pool's addresses are in no subnet of the nodes, list the interfaces here")


@dataclass(frozen=True)
class Source:
    """One object read, and where from (file:line, or the cluster)."""

    obj: Any
    origin: str

    @property
    def kind(self) -> str:
        kind = self.obj.get("kind") if isinstance(self.obj, dict) else None
        return kind if isinstance(kind, str) else ""

    @property
    def api_version(self) -> str:
        version = self.obj.get("apiVersion") if isinstance(self.obj, dict) else None
        return version if isinstance(version, str) else ""

    @property
    def metadata(self) -> dict:
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        return meta if isinstance(meta, dict) else {}

    @property
    def name(self) -> str:
        name = self.metadata.get("name")
        return name if isinstance(name, str) else ""

    def namespace(self, default: str) -> str:
        """Its namespace; none given (a file for `kubectl apply -n`) means MetalLB's."""
        namespace = self.metadata.get("namespace")
        return namespace if isinstance(namespace, str) and namespace else default

    @property
    def spec(self) -> dict:
        spec = self.obj.get("spec") if isinstance(self.obj, dict) else None
        return spec if isinstance(spec, dict) else {}


@dataclass(frozen=True)
class Finding:
    level: str  # NOT_TRANSLATED or NOTE
    kind: str
    name: str  # namespace/name, as MetalLB has it
    field: str  # "spec.serviceAllocation.priority"; "" for the whole object
    message: str
    origin: str

    def as_dict(self) -> dict:
        return {"level": self.level, "kind": self.kind, "name": self.name, "field": self.field,
                "message": self.message, "origin": self.origin}


@dataclass
class Translation:
    objects: list[Object] = field(default_factory=list)  # Leifur's, pools first, each kind by name
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Source] = field(default_factory=list)  # not MetalLB's (a Service, a Leifur object)

    @property
    def untranslated(self) -> int:
        return sum(1 for f in self.findings if f.level == NOT_TRANSLATED)

    @property
    def notes(self) -> int:
        return sum(1 for f in self.findings if f.level == NOTE)

    def count(self, kind: str) -> int:
        return sum(1 for o in self.objects if o["kind"] == kind)


class _Report:
    """Collects findings about the objects of one namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.findings: list[Finding] = []

    def add(self, level: str, src: Source, fld: str, message: str) -> None:
        self.findings.append(Finding(level, src.kind or "-", f"{src.namespace(self.namespace)}/{src.name or '-'}",
                                     fld, message, src.origin))


def translate(sources: Iterable[Source], namespace: str = DEFAULT_NAMESPACE) -> Translation:
    """Leifur's objects for MetalLB's objects of `namespace`, and findings about everything that was read."""
    from leifur.cli import metallb_bgp  # it builds on this module's sources and findings

    report = _Report(namespace)
    result = Translation()
    chosen: dict[tuple[str, str], Source] = {}
    communities: list[Source] = []
    for src in sources:
        group = src.api_version.partition("/")[0] if "/" in src.api_version else ""
        if group != GROUP:
            result.skipped.append(src)
            continue
        if not _translatable(src, report):
            if src.kind == COMMUNITY and src.name and src.namespace(namespace) == namespace:
                communities.append(src)
            continue
        earlier = chosen.get((src.kind, src.name))
        if earlier is not None:
            report.add(NOT_TRANSLATED, earlier, "", f"defined again at {src.origin}; applying both keeps only "
                                                    "the later one, which is the one translated")
        chosen[(src.kind, src.name)] = src
    ordered = sorted(chosen.values(), key=lambda s: (TRANSLATED_KINDS.index(s.kind), s.name))
    aliases = metallb_bgp.aliases(communities, report)
    translated = [_translate_pool(s, report) if s.kind == POOL else
                  _translate_advertisement(s, report) if s.kind == ADVERTISEMENT else
                  metallb_bgp.translate(s, report, aliases) for s in ordered]
    objects = _keep_valid([o for o in translated if o is not None], {(s.kind, s.name): s for s in ordered}, report)
    _unannounced_pools(objects, {s.name: s for s in ordered if s.kind == POOL}, report)
    result.objects = objects
    result.findings = sorted(report.findings, key=lambda f: (f.kind, f.name))
    return result


def _translatable(src: Source, report: _Report) -> bool:
    """Whether `src` is a MetalLB object this converter translates; if not, say why."""
    kind = src.kind
    if not isinstance(src.obj, dict) or not kind:
        report.add(NOT_TRANSLATED, src, "", "not a Kubernetes object with a kind")
        return False
    if kind in STATUS_KINDS:
        report.add(NOTE, src, "", "written by MetalLB to report its state, not configuration: nothing to translate")
        return False
    if not src.name:
        report.add(NOT_TRANSLATED, src, "metadata.name", "metadata.name is required")
        return False
    if src.namespace(report.namespace) != report.namespace:
        report.add(NOT_TRANSLATED, src, "metadata.namespace",
                   f"MetalLB reads its configuration only from its own namespace ({report.namespace}), so it "
                   "ignores this object; if MetalLB runs in that namespace, pass --namespace "
                   f"{src.namespace(report.namespace)}")
        return False
    if kind == COMMUNITY:
        return False  # its aliases are read, and noted, with the advertisements
    if kind == "AddressPool":
        report.add(NOT_TRANSLATED, src, "", "AddressPool is MetalLB's old kind (removed in v0.14): MetalLB itself "
                                            "converts it into an IPAddressPool and an L2Advertisement or "
                                            "BGPAdvertisement; convert it to those first")
        return False
    if kind not in TRANSLATED_KINDS:
        report.add(NOT_TRANSLATED, src, "kind", f"not a kind of MetalLB's configuration this converter knows "
                                                f"(it translates {', '.join(TRANSLATED_KINDS)})")
        return False
    version = VERSIONS.get(kind, TRANSLATED_VERSION)
    if src.api_version != f"{GROUP}/{version}":
        report.add(NOT_TRANSLATED, src, "apiVersion", f"this converter reads MetalLB's {kind} as {GROUP}/{version} "
                                                      f"only, not {src.api_version}")
        return False
    if "spec" in src.obj and not isinstance(src.obj["spec"], dict):
        report.add(NOT_TRANSLATED, src, "spec", "spec must be a mapping")
        return False
    return True


def _envelope(src: Source, spec: Object) -> Object:
    """Leifur's object of the same kind and name; labels are kept, since advertisements select pools by them."""
    metadata: Object = {"name": src.name}
    labels = src.metadata.get("labels")
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": names.API_VERSION, "kind": src.kind, "metadata": metadata, "spec": spec}


def _unknown_fields(src: Source, report: _Report, given: Mapping[str, Any], known: tuple[str, ...],
                    where: str) -> None:
    for key in given:
        if key not in known:
            report.add(NOT_TRANSLATED, src, f"{where}.{key}",
                       f"not a field of MetalLB's {src.kind} (v0.15 has {', '.join(known)}); left out")


def _translate_pool(src: Source, report: _Report) -> Object:
    spec = src.spec
    _unknown_fields(src, report, spec, _POOL_FIELDS, "spec")
    out: Object = {}
    addresses = spec.get("addresses")
    if isinstance(addresses, list):
        out["addresses"] = [_address(src, report, i, a) for i, a in enumerate(addresses)]
    elif addresses is not None:
        out["addresses"] = addresses  # wrong as MetalLB's too; the check of the output names the problem
    for key in ("autoAssign", "avoidBuggyIPs"):
        if key in spec:
            out[key] = spec[key]
    allocation = spec.get("serviceAllocation")
    if isinstance(allocation, dict):
        out["serviceAllocation"] = _allocation(src, report, allocation)
    elif allocation is not None:
        out["serviceAllocation"] = allocation
    return _envelope(src, out)


def _address(src: Source, report: _Report, i: int, entry: Any) -> Any:
    """One addresses entry; a CIDR with host bits set, which MetalLB reads as its network, is written so."""
    if not isinstance(entry, str) or "-" in entry or "/" not in entry:
        return entry
    try:
        ipaddress.ip_network(entry.strip())
        return entry
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return entry  # not a CIDR for MetalLB either; the check of the output names the problem
    report.add(NOTE, src, f"spec.addresses[{i}]", f"{entry!r} has host bits set; MetalLB reads it as {network}, "
                                                   "and so it is written (Leifur refuses host bits)")
    return str(network)


def _allocation(src: Source, report: _Report, allocation: Mapping[str, Any]) -> Object:
    _unknown_fields(src, report, allocation, _ALLOCATION_FIELDS, "spec.serviceAllocation")
    out: Object = {}
    priority = allocation.get("priority")
    where = "spec.serviceAllocation.priority"
    if isinstance(priority, int) and not isinstance(priority, bool) and priority <= 0:
        if priority == 0:
            report.add(NOTE, src, where, "priority 0 is MetalLB's 'no priority' (tried after every pool with one); "
                                         "Leifur's 0 would be tried first, so it is left out, which means the same")
        else:
            report.add(NOT_TRANSLATED, src, where,
                       f"a negative priority ({priority}) has no defined order in MetalLB (its sort counts only "
                       "positive values as priorities) and Leifur takes 0 or more; left out, so the pool is tried "
                       "after the pools with a priority")
    elif priority is not None:
        out["priority"] = priority
    for key in ("namespaces", "namespaceSelectors", "serviceSelectors"):
        if allocation.get(key) is not None:
            out[key] = allocation[key]
    return out


def _translate_advertisement(src: Source, report: _Report) -> Object:
    spec = src.spec
    _unknown_fields(src, report, spec, _ADVERTISEMENT_FIELDS, "spec")
    out = {key: spec[key] for key in _ADVERTISEMENT_FIELDS if spec.get(key) is not None}
    if not out.get("interfaces"):
        report.add(NOTE, src, "spec.interfaces", _INTERFACES_DEFAULT)
    return _envelope(src, out)


def _keep_valid(objects: list[Object], sources: dict[tuple[str, str], Source], report: _Report) -> list[Object]:
    """The objects `leifurctl validate` accepts; its errors make an object not translated, its warnings notes."""
    checked = validate.validate_text(dump(objects, "yaml"), "<translation>")
    failed = set()
    for finding in checked.findings:
        src = sources.get((finding.kind or "", finding.name or ""))
        if src is None:
            continue
        if finding.level == validate.ERROR:
            failed.add((src.kind, src.name))
            report.add(NOT_TRANSLATED, src, "", f"Leifur would refuse the translation: {finding.message}")
        else:
            report.add(NOTE, src, "", finding.message)
    return [o for o in objects if (o["kind"], o["metadata"]["name"]) not in failed]


def _unannounced_pools(objects: list[Object], pools: dict[str, Source], report: _Report) -> None:
    """A note on each pool that no advertisement (L2 or BGP) selects: Leifur would give its addresses
    but announce none."""
    advertisements = [parse_advertisement(o) for o in objects if o["kind"] in (ADVERTISEMENT, names.BGP_ADVERTISEMENT)]
    for obj in objects:
        if obj["kind"] != POOL:
            continue
        name, labels = obj["metadata"]["name"], obj["metadata"].get("labels") or {}
        if not any(a.selects_pool(name, labels) for a in advertisements):
            report.add(NOTE, pools[name], "", "no L2Advertisement or BGPAdvertisement selects this pool: Leifur "
                                              "gives its addresses to Services but announces none of them")


def dump(objects: list[Object], fmt: str) -> str:
    """The objects as YAML documents separated by '---', or as one JSON List (both `kubectl apply -f` them)."""
    if fmt == "yaml":
        return "".join(("---\n" if i else "") + yaml.safe_dump(o, sort_keys=False, width=100000)
                       for i, o in enumerate(objects))
    return output.dump({"apiVersion": "v1", "kind": "List", "items": objects}, fmt)
