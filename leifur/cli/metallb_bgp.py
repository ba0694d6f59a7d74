"""MetalLB's BGP configuration translated into Leifur's: BGPPeer (metallb.io/v1beta2),
BGPAdvertisement and BFDProfile (v1beta1), and the Community aliases they use. Pure; part of
leifur/cli/metallb.py's translation, with its findings.

The field names are the same by design, so most fields are copied. What is not:
- a peer dialled over an interface (unnumbered), with a dynamic ASN, or in a VRF: not translated,
  since Leifur's BGPPeer needs an address and an ASN and peers from the node's main table;
- a plain-text password: not translated (Leifur reads passwords only from Secrets); a password
  Secret is named in Leifur's namespace, where the agents read Secrets, with a note to copy it;
- connectTime, enableGracefulRestart, disableMP and dualStackAddressFamily: no counterpart;
- the timers MetalLB derives (keepalive a third of the hold time, or hold three keepalives) are
  written out, so that the session keeps them; a time in fractions of a second is rounded down to
  whole seconds, as MetalLB does; a keepalive equal to the hold time (MetalLB allows it) is not;
- a community written as the name of an alias of MetalLB's Community kind: written as its value;
- localPref 0 is MetalLB's "none" and is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from leifur.announce import bgp_objects
from leifur.cli import metallb as m
from leifur.cli.validate_bgp import API_DURATION, SECRETS_NAMESPACE
from leifur.model import names
from leifur.model.objects import Object

COMMUNITY = "Community"
# The versions MetalLB v0.15 serves these kinds in (BGPPeer's storage version is v1beta2).
VERSIONS = {names.BGP_PEER: "v1beta2", names.BGP_ADVERTISEMENT: "v1beta1", names.BFD_PROFILE: "v1beta1"}

# MetalLB v0.15's spec fields (api/v1beta2/bgppeer_types.go, api/v1beta1/*.go in its module).
_PEER_COPIED = ("myASN", "peerASN", "peerAddress", "peerPort", "sourceAddress", "routerID", "nodeSelectors",
                "bfdProfile", "ebgpMultiHop")
_PEER_TIMERS = ("holdTime", "keepaliveTime")
# Fields with no counterpart, and the value that means "not used" (as MetalLB's API fills them in).
_PEER_UNUSED: dict[str, Any] = {"connectTime": None, "enableGracefulRestart": False, "disableMP": False,
                                "dualStackAddressFamily": False}
_PEER_FIELDS = (*_PEER_COPIED, *_PEER_TIMERS, *_PEER_UNUSED, "password", "passwordSecret", "interface",
                "dynamicASN", "vrf")
_ADVERTISEMENT_COPIED = ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "peers",
                         "aggregationLength", "aggregationLengthV6")
_ADVERTISEMENT_FIELDS = (*_ADVERTISEMENT_COPIED, "communities", "localPref")
_BFD_FIELDS = ("receiveInterval", "transmitInterval", "detectMultiplier", "echoInterval", "echoMode", "passiveMode",
               "minimumTtl")

_WHY_NO_PEER = {
    "interface": "an unnumbered session over an interface: Leifur's BGPPeer needs a peerAddress",
    "dynamicASN": "a dynamic peer ASN: Leifur's BGPPeer needs the peerASN",
    "vrf": "a session in a VRF: Leifur peers from the node's main routing table",
}


def aliases(sources: Iterable[m.Source], report: m._Report) -> dict[str, str]:
    """Community alias name -> value, from MetalLB's Community objects (each gets a note)."""
    out: dict[str, str] = {}
    for src in sources:
        given = src.spec.get("communities")
        for alias in given if isinstance(given, list) else []:
            if isinstance(alias, dict) and isinstance(alias.get("name"), str) and isinstance(alias.get("value"), str):
                out[alias["name"]] = alias["value"]
        report.add(m.NOTE, src, "", "Leifur has no Community kind: the BGPAdvertisements that use its aliases get "
                                    "their values written out")
    return out


def translate(src: m.Source, report: m._Report, community_aliases: dict[str, str]) -> Object | None:
    """Leifur's object for one of MetalLB's BGP objects, or None if it cannot be translated (reported)."""
    if src.kind == names.BGP_PEER:
        return _peer(src, report)
    if src.kind == names.BGP_ADVERTISEMENT:
        return _advertisement(src, report, community_aliases)
    m._unknown_fields(src, report, src.spec, _BFD_FIELDS, "spec")
    return m._envelope(src, {k: src.spec[k] for k in _BFD_FIELDS if src.spec.get(k) is not None})


def _peer(src: m.Source, report: m._Report) -> Object | None:
    spec = src.spec
    m._unknown_fields(src, report, spec, _PEER_FIELDS, "spec")
    blocked = [key for key in _WHY_NO_PEER if spec.get(key)]
    for key in blocked:
        report.add(m.NOT_TRANSLATED, src, f"spec.{key}", _WHY_NO_PEER[key])
    if blocked:
        return None
    out: Object = {k: spec[k] for k in _PEER_COPIED if spec.get(k) is not None}
    out.update(_timers(src, report, spec))
    for key, unused in _PEER_UNUSED.items():
        if spec.get(key, unused) not in (unused, None):
            report.add(m.NOT_TRANSLATED, src, f"spec.{key}", f"Leifur's BGPPeer has no {key}; left out (the "
                                                             "routing daemon's default applies)")
    if spec.get("password"):
        report.add(m.NOT_TRANSLATED, src, "spec.password",
                   f"Leifur reads passwords only from Secrets: create a Secret of type kubernetes.io/basic-auth "
                   f"with key password in {SECRETS_NAMESPACE} and name it in spec.passwordSecret; left out")
    secret = spec.get("passwordSecret")
    if isinstance(secret, dict) and secret.get("name"):
        out["passwordSecret"] = {"name": secret["name"], "namespace": SECRETS_NAMESPACE}
        report.add(m.NOTE, src, "spec.passwordSecret",
                   f"MetalLB reads Secret {report.namespace}/{secret['name']}; Leifur's agents read Secrets only "
                   f"in {SECRETS_NAMESPACE}: copy it there (same name, type and key) before the cutover, or the "
                   "session has no password")
    return m._envelope(src, out)


def _seconds(value: Any) -> float | None:
    try:
        return bgp_objects.parse_duration(value, "") if isinstance(value, str) else None
    except ValueError:
        return None  # copied as it is: the check of the output names the problem


def _timers(src: m.Source, report: m._Report, spec: dict) -> Object:
    """holdTime and keepaliveTime as MetalLB uses them, in whole seconds."""
    given = {k: spec[k] for k in _PEER_TIMERS if spec.get(k) is not None}
    seconds = {k: _seconds(v) for k, v in given.items()}
    if None in seconds.values():
        return given  # not a duration: the check of the output names the problem
    hold, keepalive = seconds.get("holdTime"), seconds.get("keepaliveTime")
    if hold and keepalive is None:
        keepalive = hold / 3
        report.add(m.NOTE, src, "spec.keepaliveTime", f"MetalLB keeps alive every third of the hold time: written "
                                                      f"out as {int(keepalive)}s")
    elif keepalive is not None and hold is None:
        hold = keepalive * 3
        report.add(m.NOTE, src, "spec.holdTime", f"MetalLB holds for three keepalives: written out as {int(hold)}s")
    out: Object = {}
    for key, value in (("holdTime", hold), ("keepaliveTime", keepalive)):
        if value is None:
            continue
        as_given = given.get(key)
        if isinstance(as_given, str) and API_DURATION.fullmatch(as_given) and value == int(value):
            out[key] = as_given
            continue
        out[key] = f"{int(value)}s"
        if as_given is not None:
            report.add(m.NOTE, src, f"spec.{key}", f"{as_given} is written as {out[key]}: whole seconds (rounded "
                                                   "down, as MetalLB does)")
    if hold and keepalive is not None and int(keepalive) >= int(hold):
        del out["keepaliveTime"]
        report.add(m.NOT_TRANSLATED, src, "spec.keepaliveTime",
                   f"a keepalive as long as the hold time ({given.get('keepaliveTime')}): Leifur needs it shorter; "
                   "left out, so Leifur's default applies")
    return out


def _advertisement(src: m.Source, report: m._Report, community_aliases: dict[str, str]) -> Object:
    spec = src.spec
    m._unknown_fields(src, report, spec, _ADVERTISEMENT_FIELDS, "spec")
    out: Object = {k: spec[k] for k in _ADVERTISEMENT_COPIED if spec.get(k) is not None}
    communities = spec.get("communities")
    if isinstance(communities, list):
        written = []
        for i, c in enumerate(communities):
            if not isinstance(c, str) or ":" in c:
                written.append(c)  # a value: the check of the output judges it
            elif c in community_aliases:
                written.append(community_aliases[c])
                report.add(m.NOTE, src, f"spec.communities[{i}]", f"the alias {c!r} of a Community object is "
                                                                  f"written as its value {community_aliases[c]}")
            else:
                report.add(m.NOT_TRANSLATED, src, f"spec.communities[{i}]",
                           f"{c!r} is not a community (A:B or large:A:B:C), and no Community object defines it as "
                           "an alias; left out")
        out["communities"] = written
    elif communities is not None:
        out["communities"] = communities
    local_pref = spec.get("localPref")
    if local_pref == 0:
        report.add(m.NOTE, src, "spec.localPref", "localPref 0 is MetalLB's 'none' (no LOCAL_PREF sent): left out")
    elif local_pref is not None:
        out["localPref"] = local_pref
    return m._envelope(src, out)
