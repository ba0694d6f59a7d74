"""`leifurctl validate` for BGP mode: BGPPeer, BGPAdvertisement and BFDProfile manifests.

The verdict on each object is the BGP plan's own parser (`leifur.announce.bgp_objects`), so an
object that passes here is one the plan uses; it stops at an object's first problem. On top of
it come what only the CRD's schema refuses (unknown fields, times in fractions of a second or past
65535 s, ebgpMultiHop on iBGP, a source address of the other family, a password Secret without
a namespace) and what only shows across objects, as warnings: names of peers, pools or BFD
profiles that are not in the files (they may exist in the cluster), and a password Secret outside
the namespace where the agents may read Secrets.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

from leifur.announce import bgp_objects
from leifur.cli import validate as v
from leifur.model import names
from leifur.model.objects import Object
from leifur.model.settings import ControllerSettings

KINDS = (names.BGP_PEER, names.BGP_ADVERTISEMENT, names.BFD_PROFILE)

# The CRDs' spec fields (deploy/crds).
_PEER_FIELDS = ("myASN", "peerASN", "peerAddress", "peerPort", "sourceAddress", "holdTime", "keepaliveTime",
                "routerID", "nodeSelectors", "passwordSecret", "bfdProfile", "ebgpMultiHop")
_SECRET_FIELDS = ("name", "namespace")
_ADVERTISEMENT_FIELDS = ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "peers", "communities",
                         "localPref", "aggregationLength", "aggregationLengthV6")
_BFD_FIELDS = ("receiveInterval", "transmitInterval", "detectMultiplier", "echoInterval", "echoMode", "passiveMode",
               "minimumTtl")
_BOOLEANS = ("ebgpMultiHop", "echoMode", "passiveMode")
# The CRD's duration syntax: whole numbers with a unit (the plan's parser also takes fractions).
API_DURATION = re.compile(r"([0-9]{1,5}(ms|s|m|h)){1,3}")
_MAX_BGP_SECONDS = 65535  # hold and keepalive times are 16-bit in BGP's OPEN message
_MAX_COMMUNITIES = 64  # the CRD's maxItems
# Where the agents may read Secrets (their Role, deploy/agent/rbac.yaml): Leifur's namespace.
SECRETS_NAMESPACE = ControllerSettings().lease_namespace


def check(report: v.Report, doc: v.Document) -> None:
    """One BGP object alone: the CRD's schema, then the plan's parser."""
    spec = doc.data.get("spec")
    if spec is None and doc.kind == names.BGP_PEER:
        _error(report, doc, "spec is required, with spec.myASN, spec.peerASN and spec.peerAddress")
        return
    spec = spec or {}
    fields = {names.BGP_PEER: _PEER_FIELDS, names.BGP_ADVERTISEMENT: _ADVERTISEMENT_FIELDS,
              names.BFD_PROFILE: _BFD_FIELDS}[doc.kind or ""]
    v._unknown_fields(report, doc, spec, fields, "spec")
    for key in _BOOLEANS:
        if key in spec and not isinstance(spec[key], bool):
            _error(report, doc, f"spec.{key} must be true or false, got {spec[key]!r}")
    if doc.kind == names.BGP_PEER:
        _check_peer(report, doc, spec)
    elif doc.kind == names.BGP_ADVERTISEMENT:
        _check_advertisement(report, doc, spec)
    parser: Callable[[Object], Any] = {names.BGP_PEER: bgp_objects.parse_peer,
                                       names.BGP_ADVERTISEMENT: bgp_objects.parse_bgp_advertisement,
                                       names.BFD_PROFILE: bgp_objects.parse_bfd_profile}[doc.kind or ""]
    try:
        parser(doc.data)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        message = str(e) if isinstance(e, ValueError) else f"spec is malformed ({type(e).__name__}: {e})"
        # The same problem, found by the schema's checks above, is reported once: theirs.
        field = v._PATH.match(message)
        reported = [f.message for f in report.findings if (f.kind, f.name, f.level) == (doc.kind, doc.name, v.ERROR)]
        if not (field and any(m.startswith(field.group(0)) for m in reported)):
            _error(report, doc, message)


def _error(report: v.Report, doc: v.Document, message: str) -> None:
    report.add(v.ERROR, doc, message)


def _check_peer(report: v.Report, doc: v.Document, spec: dict) -> None:
    for key in ("holdTime", "keepaliveTime"):
        _check_time(report, doc, spec, key)
    if spec.get("ebgpMultiHop") is True and spec.get("myASN") == spec.get("peerASN"):
        _error(report, doc, "spec.ebgpMultiHop is for eBGP sessions, but myASN equals peerASN (iBGP); leave it out")
    families = {key: _family(spec.get(key)) for key in ("peerAddress", "sourceAddress")}
    if None not in families.values() and families["peerAddress"] != families["sourceAddress"]:
        _error(report, doc, f"spec.sourceAddress: {spec['sourceAddress']} is IPv{families['sourceAddress']} but "
                             f"peerAddress {spec['peerAddress']} is IPv{families['peerAddress']}; both must be "
                             "of one family")
    secret = spec.get("passwordSecret")
    if isinstance(secret, dict):
        v._unknown_fields(report, doc, secret, _SECRET_FIELDS, "spec.passwordSecret")
        if not secret.get("namespace"):
            _error(report, doc, f"spec.passwordSecret.namespace is required (the agents read Secrets in "
                                 f"{SECRETS_NAMESPACE})")
        elif secret["namespace"] != SECRETS_NAMESPACE:
            report.add(v.WARNING, doc, f"spec.passwordSecret.namespace {secret['namespace']!r}: the agents may "
                                       f"read Secrets only in Leifur's namespace ({SECRETS_NAMESPACE} unless "
                                       "installed elsewhere), so the session would have no password")


def _check_time(report: v.Report, doc: v.Document, spec: dict, key: str) -> None:
    """A BGP time as the CRD takes it (the range below 3 s, and against the other time, is the plan's)."""
    value = spec.get(key)
    if value is None:
        return
    if not isinstance(value, str) or not API_DURATION.fullmatch(value):
        _error(report, doc, f"spec.{key}: {value!r} is not a duration such as 90s, 3m or 1m30s (whole numbers "
                            "with ms, s, m or h)")
        return
    seconds = bgp_objects.parse_duration(value, f"spec.{key}")
    if seconds != int(seconds):
        _error(report, doc, f"spec.{key}: {value} is not a whole number of seconds")
    elif seconds > _MAX_BGP_SECONDS:
        _error(report, doc, f"spec.{key}: {value} is longer than {_MAX_BGP_SECONDS}s")


def _family(value: Any) -> int | None:
    try:
        return ipaddress.ip_address(value).version if isinstance(value, str) else None
    except ValueError:
        return None


def _check_advertisement(report: v.Report, doc: v.Document, spec: dict) -> None:
    for key in ("ipAddressPools", "peers"):
        listed = v._check_string_list(report, doc, spec, key)
        for name in sorted({n for n in listed if listed.count(n) > 1}):
            report.add(v.WARNING, doc, f"spec.{key} names {name!r} more than once")
    communities = spec.get("communities")
    if isinstance(communities, list) and len(communities) > _MAX_COMMUNITIES:
        _error(report, doc, f"spec.communities has {len(communities)} entries; at most {_MAX_COMMUNITIES}")


def check_references(report: v.Report, docs: Iterable[v.Document]) -> None:
    """Peers naming BFD profiles, and advertisements naming peers, that are not in the files given."""
    docs = list(docs)
    given = {kind: {d.name for d in docs if d.kind == kind and d.name} for kind in KINDS}
    refs = ((names.BGP_PEER, "bfdProfile", names.BFD_PROFILE), (names.BGP_ADVERTISEMENT, "peers", names.BGP_PEER))
    for kind, key, target in refs:
        for doc in (d for d in docs if d.kind == kind):
            spec = doc.data.get("spec") if isinstance(doc.data.get("spec"), dict) else {}
            value = spec.get(key)
            # bfdProfile is one name, peers a list of them; a value of the wrong type is reported by check().
            listed = ([(f"spec.{key}", value)] if key == "bfdProfile" else
                      [(f"spec.{key}[{i}]", n) for i, n in enumerate(value if isinstance(value, list) else [])])
            for where, name in listed:
                if isinstance(name, str) and name and name not in given[target]:
                    there = ", ".join(sorted(given[target])) or "none"
                    report.add(v.WARNING, doc, f"{where}: {target} {name!r} is not in the files given ({target}s "
                                               f"there: {there}){v._suggest(name, given[target])}; fine if it "
                                               "already exists in the cluster")
