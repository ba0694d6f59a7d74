"""BGPPeer, BGPAdvertisement and BFDProfile, parsed into typed views. Pure.

A spec the CRD's schema would refuse can still reach us (an older CRD, a write that skipped
validation): each parser raises ValueError with a message naming the field, and the plan skips
that object and reports it, never advertising from a guess.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leifur.announce.bgp_intent import BFD, SecretRef
from leifur.ipam.selectors import label_selector_problems, selects_by_labels, selects_by_name_or_labels
from leifur.model.objects import Object

MAX_ASN = 4294967295
DEFAULT_PORT = 179
DEFAULT_HOLD_S = 90
DEFAULT_KEEPALIVE_S = 30
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_STANDARD = re.compile(r"^(\d+):(\d+)$")
_LARGE = re.compile(r"^large:(\d+):(\d+):(\d+)$")


@dataclass(frozen=True)
class Peer:
    """A BGPPeer: whom the selected nodes open a session with."""

    name: str
    address: str
    my_asn: int
    peer_asn: int
    port: int = DEFAULT_PORT
    hold_time_s: int = DEFAULT_HOLD_S
    keepalive_time_s: int = DEFAULT_KEEPALIVE_S
    source_address: str | None = None
    router_id: str | None = None
    node_selectors: tuple[Mapping[str, Any], ...] = ()
    password_secret: SecretRef | None = None
    bfd_profile: str | None = None
    ebgp_multihop: bool = False

    def selects_node(self, node_labels: Mapping[str, str]) -> bool:
        return selects_by_labels(self.node_selectors, node_labels)


@dataclass(frozen=True)
class BGPAdvertisement:
    """A BGPAdvertisement: which pools' IPs go from which nodes to which peers, with what attributes."""

    name: str
    pools: frozenset[str] = frozenset()
    pool_selectors: tuple[Mapping[str, Any], ...] = ()
    node_selectors: tuple[Mapping[str, Any], ...] = ()
    peers: frozenset[str] = frozenset()  # empty: every peer
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    local_preference: int | None = None
    aggregation_length: int = 32
    aggregation_length_v6: int = 128

    def selects_pool(self, pool: str, pool_labels: Mapping[str, str]) -> bool:
        return selects_by_name_or_labels(self.pools, self.pool_selectors, pool, pool_labels)

    def selects_node(self, node_labels: Mapping[str, str]) -> bool:
        return selects_by_labels(self.node_selectors, node_labels)

    def selects_peer(self, peer: str) -> bool:
        return not self.peers or peer in self.peers


def parse_duration(value: Any, where: str) -> float:
    """Seconds in a Go duration string ("90s", "1m30s", "500ms"), as the API's durations are written."""
    text = str(value).strip()
    if not text or _DURATION.sub("", text):
        raise ValueError(f"{where}: {value!r} is not a duration (like 90s, 1m30s)")
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in _DURATION.findall(text))


def _int(spec: Mapping[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = spec.get(key, default)
    if value is None:
        raise ValueError(f"spec.{key} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"spec.{key}: {value!r} is not a whole number from {low} to {high}")
    return value


def _ip(value: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not an IP address") from None


def _selectors(spec: Mapping[str, Any], key: str) -> tuple[Mapping[str, Any], ...]:
    selectors = spec.get(key) or []
    if not isinstance(selectors, list):
        raise ValueError(f"spec.{key} must be a list of label selectors")
    for i, s in enumerate(selectors):
        if problems := label_selector_problems(s, f"spec.{key}[{i}]"):
            raise ValueError("; ".join(problems))
    return tuple(selectors)


def parse_peer(obj: Object) -> Peer:
    spec = obj.get("spec") or {}
    hold = parse_duration(spec["holdTime"], "spec.holdTime") if "holdTime" in spec else DEFAULT_HOLD_S
    keepalive = (parse_duration(spec["keepaliveTime"], "spec.keepaliveTime") if "keepaliveTime" in spec
                 else min(DEFAULT_KEEPALIVE_S, hold / 3))
    if hold and hold < 3:
        raise ValueError(f"spec.holdTime: {hold:g}s is below 3s (BGP allows 0 or at least 3 seconds)")
    if hold and keepalive >= hold:
        raise ValueError(f"spec.keepaliveTime ({keepalive:g}s) must be shorter than spec.holdTime ({hold:g}s)")
    secret = spec.get("passwordSecret")
    if secret is not None and not (isinstance(secret, dict) and secret.get("name")):
        raise ValueError("spec.passwordSecret needs a name (and a namespace)")
    router_id = spec.get("routerID")
    if router_id is not None and ipaddress.ip_address(_ip(router_id, "spec.routerID")).version != 4:
        raise ValueError(f"spec.routerID: {router_id!r} is not an IPv4 address")
    return Peer(
        name=obj["metadata"]["name"],
        address=_ip(spec.get("peerAddress"), "spec.peerAddress"),
        my_asn=_int(spec, "myASN", 1, MAX_ASN),
        peer_asn=_int(spec, "peerASN", 1, MAX_ASN),
        port=_int(spec, "peerPort", 1, 65535, DEFAULT_PORT),
        hold_time_s=int(hold),
        keepalive_time_s=int(keepalive),
        source_address=_ip(spec["sourceAddress"], "spec.sourceAddress") if spec.get("sourceAddress") else None,
        router_id=router_id,
        node_selectors=_selectors(spec, "nodeSelectors"),
        password_secret=(SecretRef(secret.get("namespace") or "", secret["name"])
                         if secret else None),
        bfd_profile=spec.get("bfdProfile") or None,
        ebgp_multihop=bool(spec.get("ebgpMultiHop")),
    )


def _communities(values: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(standard, large) communities, each sorted once, from MetalLB's spellings "A:B" and "large:A:B:C"."""
    if not isinstance(values, list):
        raise ValueError("spec.communities must be a list of strings")
    standard, large = set(), set()
    for value in values:
        text = str(value).strip()
        if m := _STANDARD.match(text):
            if any(int(n) > 65535 for n in m.groups()):
                raise ValueError(f"spec.communities: {text!r}: both halves of a community are at most 65535")
            standard.add(f"{int(m[1])}:{int(m[2])}")
        elif m := _LARGE.match(text):
            if any(int(n) > MAX_ASN for n in m.groups()):
                raise ValueError(f"spec.communities: {text!r}: the parts of a large community are at most {MAX_ASN}")
            large.add(":".join(str(int(n)) for n in m.groups()))
        else:
            raise ValueError(f"spec.communities: {text!r} is neither A:B nor large:A:B:C")
    return tuple(sorted(standard, key=community_order)), tuple(sorted(large, key=community_order))


def community_order(community: str) -> tuple[int, ...]:
    return tuple(int(n) for n in community.split(":"))


def parse_bgp_advertisement(obj: Object) -> BGPAdvertisement:
    spec = obj.get("spec") or {}
    standard, large = _communities(spec.get("communities") or [])
    local_pref = spec.get("localPref")
    return BGPAdvertisement(
        name=obj["metadata"]["name"],
        pools=frozenset(spec.get("ipAddressPools") or ()),
        pool_selectors=_selectors(spec, "ipAddressPoolSelectors"),
        node_selectors=_selectors(spec, "nodeSelectors"),
        peers=frozenset(spec.get("peers") or ()),
        communities=standard,
        large_communities=large,
        local_preference=None if local_pref is None else _int(spec, "localPref", 0, MAX_ASN),
        aggregation_length=_int(spec, "aggregationLength", 0, 32, 32),
        aggregation_length_v6=_int(spec, "aggregationLengthV6", 0, 128, 128),
    )


def parse_bfd_profile(obj: Object) -> BFD:
    spec = obj.get("spec") or {}
    return BFD(
        name=obj["metadata"]["name"],
        receive_interval_ms=_int(spec, "receiveInterval", 10, 60000, 300),
        transmit_interval_ms=_int(spec, "transmitInterval", 10, 60000, 300),
        detect_multiplier=_int(spec, "detectMultiplier", 2, 255, 3),
        echo_mode=bool(spec.get("echoMode")),
        echo_interval_ms=_int(spec, "echoInterval", 10, 60000, 50),
        passive_mode=bool(spec.get("passiveMode")),
        minimum_ttl=_int(spec, "minimumTtl", 1, 254, 254),
    )
