"""`leifurctl validate`: Leifur's manifests checked offline, before `kubectl apply`.

The pool checks are the controller's own (`leifur.ipam.pool.parse_pool`), so a pool that passes
here is one the controller accepts; on top of them come what the CRD schema would reject (unknown
fields, enum values, limits) and what only shows across objects (duplicate names, overlapping pools,
advertisements naming pools that are not there).

Errors make the command fail: the API server or the controller would refuse the object or mark it
invalid. Warnings do not (unless --strict): the objects work, but probably not as meant.
BGP mode's kinds are checked by leifur/cli/validate_bgp.py, with the BGP plan's parser.
- Two pools sharing addresses: the controller accepts it (an address is never given twice, and
  the pools report `Overlapping=True`), but which pool an address comes from depends on the order
  pools are tried, which is rarely what was intended.
- An advertisement naming a pool that is not in the files: the pool may exist in the cluster
  already, which an offline check cannot know; if it does not, the advertisement selects nothing
  for that name and nothing breaks.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leifur.cli import output
from leifur.ipam.pool import Pool, PoolError, parse_pool
from leifur.ipam.selectors import label_selector_problems, selector_matches
from leifur.model import names

ERROR = "error"
WARNING = "warning"

POOL = "IPAddressPool"
ADVERTISEMENT = "L2Advertisement"
KINDS = (POOL, ADVERTISEMENT, names.BGP_PEER, names.BGP_ADVERTISEMENT, names.BFD_PROFILE)
WRITTEN_BY_AGENTS = "L2NodeStatus"

_TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
_POOL_FIELDS = ("addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation")
_ALLOCATION_FIELDS = ("priority", "namespaces", "namespaceSelectors", "serviceSelectors")
_ADVERTISEMENT_FIELDS = ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "interfaces", "mode")
_MODES = ("Responder", "Netlink")
_MAX_ADDRESSES = 256  # the CRD's maxItems
_MAX_ENTRY = 100  # the CRD's maxLength of one addresses entry
_IFNAMSIZ = 15  # Linux interface names: 15 characters and the terminating NUL
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# The field path a message starts with: spec.addresses[2], spec.serviceAllocation.namespaceSelectors[0]...
_PATH = re.compile(r"^(?:apiVersion|kind|metadata|spec|status)(?:\.[A-Za-z0-9_-]+|\[\d+\])*")
_PATH_PART = re.compile(r"\.?([A-Za-z0-9_-]+)|\[(\d+)\]")


@dataclass
class Finding:
    level: str  # ERROR or WARNING
    file: str
    line: int | None
    kind: str | None
    name: str | None
    message: str

    def as_dict(self) -> dict:
        return {"level": self.level, "file": self.file, "line": self.line, "kind": self.kind, "name": self.name,
                "message": self.message}

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def object(self) -> str:
        if self.kind and self.name:
            return f"{self.kind}/{self.name}"
        return self.kind or output.NONE


@dataclass
class Document:
    """One object from a file, with its YAML node to find the line of a field."""

    file: str
    data: Any
    node: yaml.Node

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    @property
    def kind(self) -> str | None:
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def name(self) -> str | None:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) and name else None

    def line_of(self, path: str) -> int:
        """The line of the deepest part of a field path (spec.addresses[1]) that the document has."""
        node = self.node
        for key, index in _PATH_PART.findall(path):
            child = None
            if index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
                child = node.value[int(index)]
            elif key and isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
            if child is None:
                break
            node = child
        return node.start_mark.line + 1


@dataclass
class Report:
    files: list[str] = field(default_factory=list)
    objects: list[Document] = field(default_factory=list)
    skipped: list[Document] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: str, doc: Document | None, message: str, *, file: str | None = None,
            line: int | None = None) -> None:
        if doc is not None:
            path = _PATH.match(message)
            line = line or (doc.line_of(path.group(0)) if path else doc.line)
            file = doc.file
        self.findings.append(Finding(level, file or "", line, doc.kind if doc else None, doc.name if doc else None,
                                     message))

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.level == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.level == WARNING)

    def ok(self, strict: bool = False) -> bool:
        return not self.errors and not (strict and self.warnings)

    def as_dict(self, strict: bool = False) -> dict:
        def where(d: Document) -> dict:
            return {"file": d.file, "line": d.line}

        return {
            "ok": self.ok(strict),
            "errors": self.errors,
            "warnings": self.warnings,
            "files": self.files,
            "objects": [{"kind": d.kind, "name": d.name, **where(d)} for d in self.objects],
            "skipped": [{"apiVersion": d.data.get("apiVersion"), "kind": d.kind, "name": d.name, **where(d)}
                        for d in self.skipped],
            "findings": [f.as_dict() for f in self.findings],
        }


# -- reading files ------------------------------------------------------------------------------


def _inputs(paths: Iterable[str], report: Report) -> Iterator[tuple[str, str]]:
    """(display name, text) of every file named, directories read one level deep, "-" for stdin."""
    for p in paths:
        if p == "-":
            report.files.append("<stdin>")
            yield "<stdin>", sys.stdin.read()
            continue
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.suffix in (".yaml", ".yml", ".json") and f.is_file())
            if not found:
                report.add(ERROR, None, "a directory with no .yaml, .yml or .json file in it", file=p)
            files = [(str(f), f) for f in found]
        else:
            files = [(p, path)]
        for shown, f in files:
            report.files.append(shown)
            try:
                yield shown, f.read_text(encoding="utf-8")
            except FileNotFoundError:
                report.add(ERROR, None, "no such file", file=shown)
            except (OSError, UnicodeDecodeError) as e:
                report.add(ERROR, None, f"cannot read: {e}", file=shown)


def read(paths: Iterable[str], report: Report) -> Iterator[Document]:
    """Every document of the files named, read as validate reads them; what cannot be read is an error in `report`."""
    for file, text in _inputs(paths, report):
        yield from _documents(file, text, report)


def _duplicate_keys(node: yaml.Node, out: list[tuple[str, int, int]]) -> None:
    """(key, first line, repeated line) for every mapping key given twice: YAML would keep only the last."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                if k.value in seen:
                    out.append((k.value, seen[k.value], k.start_mark.line + 1))
                else:
                    seen[k.value] = k.start_mark.line + 1
            _duplicate_keys(v, out)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            _duplicate_keys(v, out)


def _documents(file: str, text: str, report: Report) -> Iterator[Document]:
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            data = loader.construct_document(node)
            if data is None:
                continue  # an empty document, as between two "---"
            doc = Document(file, data, node)
            dups: list[tuple[str, int, int]] = []
            _duplicate_keys(node, dups)
            for key, first, again in dups:
                report.add(ERROR, doc if isinstance(data, dict) else None,
                           f"key {key!r} appears twice in one mapping (lines {first} and {again}); YAML keeps only "
                           "the last", file=file, line=again)
            if isinstance(data, dict) and isinstance(data.get("kind"), str) and data["kind"].endswith("List") \
                    and isinstance(data.get("items"), list) and isinstance(node, yaml.MappingNode):
                items = next((v for k, v in node.value if getattr(k, "value", None) == "items"), None)
                for i, item in enumerate(data["items"]):
                    yield Document(file, item, items.value[i] if isinstance(items, yaml.SequenceNode) else node)
                continue
            yield doc
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        detail = f"{context}, {problem}" if context else problem
        report.add(ERROR, None, f"YAML syntax error: {detail}{where}; nothing after it in this file was checked",
                   file=file, line=mark.line + 1 if mark else None)
    finally:
        loader.dispose()


# -- checking objects ---------------------------------------------------------------------------


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_fields(report: Report, doc: Document, obj: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in obj:
        if key not in allowed:
            report.add(ERROR, doc, f"{where}.{key}: unknown field{_suggest(str(key), allowed)} "
                                   f"(known: {', '.join(allowed)}); the API server would reject it")


def _check_envelope(report: Report, doc: Document) -> bool:
    """Object-level checks for a document that claims to be one of ours; False if it cannot be checked further."""
    data = doc.data
    for key in data:
        if key not in _TOP_FIELDS:
            report.add(ERROR, doc, f"{key}: unknown top-level field{_suggest(str(key), _TOP_FIELDS)}",
                       line=doc.line_of(str(key)))
    if "status" in data:
        report.add(WARNING, doc, "status is written by Leifur, not by hand; the API server ignores it on create")
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        report.add(ERROR, doc, "metadata.name is required (metadata is missing or not a mapping)")
        return False
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        report.add(ERROR, doc, "metadata.name is required" + (" (generateName is not supported by kubectl apply)"
                                                               if "generateName" in meta else ""))
        return False
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        report.add(ERROR, doc, f"metadata.name {name!r} is not a valid name: lower-case letters, digits, '-' and "
                               "'.', starting and ending with a letter or digit, at most 253 characters")
    if meta.get("namespace"):
        report.add(WARNING, doc, f"metadata.namespace: {doc.kind} is cluster-scoped; the namespace "
                                 f"{meta['namespace']!r} is ignored")
    labels = meta.get("labels")
    if labels is not None:
        for p in label_selector_problems({"matchLabels": labels}, "metadata"):
            report.add(ERROR, doc, p.replace("metadata.matchLabels", "metadata.labels", 1))
    spec = data.get("spec")
    if spec is not None and not isinstance(spec, dict):
        report.add(ERROR, doc, f"spec must be a mapping, got {type(spec).__name__}")
        return False
    return True


def _check_pool(report: Report, doc: Document) -> Pool | None:
    spec = doc.data.get("spec")
    if spec is None:
        report.add(ERROR, doc, "spec is required, with spec.addresses listing CIDRs, ranges (A-B) or addresses")
        return None
    _unknown_fields(report, doc, spec, _POOL_FIELDS, "spec")
    addresses = spec.get("addresses")
    if isinstance(addresses, list):
        if len(addresses) > _MAX_ADDRESSES:
            report.add(ERROR, doc, f"spec.addresses has {len(addresses)} entries; at most {_MAX_ADDRESSES} "
                                   "(use ranges or larger CIDRs)")
        for i, entry in enumerate(addresses):
            if isinstance(entry, str) and len(entry) > _MAX_ENTRY:
                report.add(ERROR, doc, f"spec.addresses[{i}] is longer than {_MAX_ENTRY} characters")
    allocation = spec.get("serviceAllocation")
    if isinstance(allocation, dict):
        _unknown_fields(report, doc, allocation, _ALLOCATION_FIELDS, "spec.serviceAllocation")
        priority = allocation.get("priority")
        if isinstance(priority, int) and not isinstance(priority, bool) and priority < 0:
            report.add(ERROR, doc, f"spec.serviceAllocation.priority must be 0 or more (lower is tried first), "
                                   f"got {priority}")
        namespaces = allocation.get("namespaces")
        for i, ns in enumerate(namespaces if isinstance(namespaces, list) else []):
            if isinstance(ns, str) and len(ns) > 63:
                report.add(ERROR, doc, f"spec.serviceAllocation.namespaces[{i}] is longer than 63 characters")
    try:
        pool = parse_pool(doc.name or "", spec)
    except PoolError as e:
        for problem in e.problems:
            report.add(ERROR, doc, problem)
        return None
    for version in sorted(pool.families()):
        if pool.size(version) == 0:
            report.add(WARNING, doc, f"the pool has no usable IPv{version} address: avoidBuggyIPs excludes every "
                                     "one (addresses ending in .0 or .255)")
    return pool


def _check_string_list(report: Report, doc: Document, spec: dict, key: str) -> list[str]:
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        report.add(ERROR, doc, f"spec.{key} must be a list, got {value!r}")
        return []
    good = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            report.add(ERROR, doc, f"spec.{key}[{i}] must be a non-empty string, got {item!r}")
        else:
            good.append(item)
    return good


def _check_advertisement(report: Report, doc: Document) -> None:
    spec = doc.data.get("spec") or {}
    _unknown_fields(report, doc, spec, _ADVERTISEMENT_FIELDS, "spec")
    pools = _check_string_list(report, doc, spec, "ipAddressPools")
    for name in sorted({p for p in pools if pools.count(p) > 1}):
        report.add(WARNING, doc, f"spec.ipAddressPools names {name!r} more than once")
    for key in ("ipAddressPoolSelectors", "nodeSelectors"):
        selectors = spec.get(key)
        if selectors is None:
            continue
        if not isinstance(selectors, list):
            report.add(ERROR, doc, f"spec.{key} must be a list of label selectors, got {selectors!r}")
            continue
        for i, s in enumerate(selectors):
            for problem in label_selector_problems(s, f"spec.{key}[{i}]"):
                report.add(ERROR, doc, problem)
    for i, ifname in enumerate(_check_string_list(report, doc, spec, "interfaces")):
        if len(ifname) > _IFNAMSIZ or ifname in (".", "..") or re.search(r"[/\s]", ifname):
            report.add(ERROR, doc, f"spec.interfaces[{i}] {ifname!r} is not a Linux interface name (at most "
                                   f"{_IFNAMSIZ} characters, no '/' or whitespace)")
    mode = spec.get("mode")
    if mode is not None and mode not in _MODES:
        report.add(ERROR, doc, f"spec.mode must be {' or '.join(_MODES)}, got {mode!r}{_suggest(str(mode), _MODES)}")


def _check_references(report: Report, ads: list[Document], pools: dict[str, tuple[Document, Pool | None]]) -> None:
    """Advertisements against the pools in the same files: names that are not there, selectors matching none."""
    given = ", ".join(sorted(pools)) or "none"
    for doc in ads:
        spec = doc.data.get("spec") if isinstance(doc.data.get("spec"), dict) else {}
        names_ = spec.get("ipAddressPools")
        if not isinstance(names_, list):
            names_ = []
        for i, name in enumerate(names_):
            if isinstance(name, str) and name and name not in pools:
                close = difflib.get_close_matches(name, list(pools), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"pools there: {given}"
                report.add(WARNING, doc, f"spec.ipAddressPools[{i}]: pool {name!r} is not in the files given "
                                         f"({hint}); fine if it already exists in the cluster")
        selectors = spec.get("ipAddressPoolSelectors")
        if not isinstance(selectors, list):
            continue
        for i, s in enumerate(selectors):
            if not isinstance(s, dict) or label_selector_problems(s):
                continue
            if not any(selector_matches(s, _labels(pdoc)) for pdoc, _ in pools.values()):
                report.add(WARNING, doc, f"spec.ipAddressPoolSelectors[{i}] selects none of the pools in the files "
                                         f"given (pools there: {given}); fine if it selects pools in the cluster")


def _labels(doc: Document) -> dict:
    labels = (doc.data.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def _common(a: Pool, b: Pool) -> str:
    """The first stretch of addresses two pools share, and how many stretches there are."""
    shared = []
    for ra in a.ranges:
        for rb in b.ranges:
            if ra.overlaps(rb):
                first, last = max(ra.first, rb.first), min(ra.last, rb.last)
                shared.append(str(first) if first == last else f"{first}-{last}")
    more = f" and {len(shared) - 1} more" if len(shared) > 1 else ""
    return f"{shared[0]}{more}" if shared else ""


def _check_overlaps(report: Report, pools: dict[str, tuple[Document, Pool | None]]) -> None:
    parsed = [(doc, pool) for doc, pool in pools.values() if pool is not None]
    for j, (doc, pool) in enumerate(parsed):
        for other_doc, other in parsed[:j]:
            common = _common(other, pool)
            if common:
                report.add(WARNING, doc, f"shares addresses with IPAddressPool {other.name!r} "
                                         f"({other_doc.file}:{other_doc.line}): {common}; the controller accepts "
                                         "it (never giving an address twice) but marks both pools Overlapping")


def validate(paths: Iterable[str]) -> Report:
    """Read every file and check every pool and advertisement in them, alone and together."""
    report = Report()
    return _check(_inputs(paths, report), report)


def validate_objects(paths: Iterable[str]) -> tuple[Report, list[Any]]:
    """validate(), and the objects read (each document's data), from one reading of the files."""
    report = Report()
    objects: list[Any] = []
    return _check(_inputs(paths, report), report, objects), objects


def validate_text(text: str, file: str = "<text>") -> Report:
    """Check manifests given as text (what another command is about to print), as if read from `file`."""
    return _check([(file, text)], Report(files=[file]))


def _check(inputs: Iterable[tuple[str, str]], report: Report, objects: list[Any] | None = None) -> Report:
    """The checks; `objects`, if given, gets each document's data as it is parsed."""
    # Imported here: validate_bgp builds on this module's report and helpers.
    from leifur.cli import validate_bgp

    pools: dict[str, tuple[Document, Pool | None]] = {}
    ads: list[Document] = []  # those that name pools: L2 and BGP advertisements
    bgp: list[Document] = []
    seen: dict[tuple[str, str], Document] = {}
    for file, text in inputs:
        for doc in _documents(file, text, report):
            if objects is not None:
                objects.append(doc.data)
            if not isinstance(doc.data, dict):
                report.add(ERROR, doc, f"not a Kubernetes object: a document must be a mapping with apiVersion, "
                                       f"kind and metadata, got {type(doc.data).__name__}")
                continue
            kind, api_version = doc.kind, doc.data.get("apiVersion")
            if not kind:
                report.add(ERROR, doc, f"kind is required ({_either(KINDS)})")
                continue
            if not isinstance(api_version, str) or not api_version:
                report.add(ERROR, doc, f"apiVersion is required ({names.API_VERSION} for {kind})")
                continue
            group = api_version.split("/")[0] if "/" in api_version else ""
            if kind not in KINDS:
                if group == names.GROUP and kind == WRITTEN_BY_AGENTS:
                    report.add(WARNING, doc, "L2NodeStatus is written by the agents, not by hand; not checked")
                elif group == names.GROUP:
                    report.add(ERROR, doc, f"unknown kind {kind!r} in {names.GROUP}: Leifur's kinds are "
                                           f"{', '.join(KINDS)}{_suggest(kind, KINDS)}", line=doc.line_of("kind"))
                else:
                    report.skipped.append(doc)
                continue
            if api_version != names.API_VERSION:
                why = (f"{names.GROUP} serves only {names.VERSION}" if group == names.GROUP
                       else f"that is another project's {kind}; Leifur's is {names.API_VERSION}")
                report.add(ERROR, doc, f"apiVersion {api_version!r}: {why}")
                continue
            report.objects.append(doc)
            if not _check_envelope(report, doc):
                continue
            name = doc.name or ""
            first = seen.get((kind, name))
            if first is not None:
                report.add(ERROR, doc, f"metadata.name: {kind} {name!r} is also defined at {first.file}:{first.line}; "
                                       "applying both keeps only the last")
                continue
            seen[(kind, name)] = doc
            if kind == POOL:
                pools[name] = (doc, _check_pool(report, doc))
            elif kind == ADVERTISEMENT:
                _check_advertisement(report, doc)
                ads.append(doc)
            else:
                validate_bgp.check(report, doc)
                bgp.append(doc)
                if kind == names.BGP_ADVERTISEMENT:
                    ads.append(doc)
    _check_overlaps(report, pools)
    _check_references(report, ads, pools)
    validate_bgp.check_references(report, bgp)
    if not report.objects and not report.findings:
        report.add(WARNING, None, f"no {_either(KINDS)} in the files given", file="")
    order = {f: i for i, f in enumerate(report.files)}
    report.findings.sort(key=lambda f: (order.get(f.file, len(order)), f.line or 0))
    return report


def _either(words: tuple[str, ...]) -> str:
    return f"{', '.join(words[:-1])} or {words[-1]}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render(report: Report, strict: bool = False) -> str:
    """Findings as a table, then one summary line (and what was skipped)."""
    lines = []
    if report.findings:
        lines.append(output.table(
            ("LOCATION", "LEVEL", "OBJECT", "MESSAGE"),
            [(f.location, f.level, f.object, f.message) for f in report.findings]))
        lines.append("")
    kinds = [d.kind or "" for d in report.objects]
    checked = ", ".join(_plural(kinds.count(k), k) for k in KINDS if k in kinds) or "no Leifur objects"
    result = []
    if report.errors:
        result.append(_plural(report.errors, "error"))
    if report.warnings:
        result.append(_plural(report.warnings, "warning") + (" (--strict: failing)" if strict else ""))
    verdict = "FAILED" if not report.ok(strict) else "OK"
    lines.append(f"{verdict}: {checked} in {_plural(len(report.files), 'file')}: "
                 f"{', '.join(result) or 'no problems'}")
    if report.skipped:
        what = sorted({f"{d.data.get('apiVersion')} {d.kind}" for d in report.skipped})
        lines.append(f"skipped {_plural(len(report.skipped), 'other object')} ({', '.join(what)}): "
                     "not Leifur's to check")
    return "\n".join(lines)
