"""What a Service asks of us, read from its API object (a dict). Pure: no I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from leifur.model import annotations as ann
from leifur.model import names
from leifur.model.objects import Object, key_of

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

REASON_INVALID_REQUEST = "InvalidRequest"

TRAFFIC_POLICIES = ("Cluster", "Local")


@dataclass(frozen=True)
class ServiceTraits:
    """What the sharing rules need to know about a Service."""

    key: str  # "namespace/name"
    sharing_key: str | None = None
    ports: frozenset[tuple[str, int]] = frozenset()  # (protocol, port)
    traffic_policy: str = "Cluster"  # or "Local"
    selector: frozenset[tuple[str, str]] | None = None

    def __post_init__(self) -> None:
        # Any iterable of ports and a selector given as a dict are accepted, and stored in the hashable form.
        object.__setattr__(self, "ports", frozenset(self.ports))
        if self.selector is not None:
            items: Iterable[tuple[str, str]] = (
                self.selector.items() if isinstance(self.selector, Mapping) else self.selector)
            object.__setattr__(self, "selector", frozenset(items))
        if self.traffic_policy not in TRAFFIC_POLICIES:
            raise ValueError(f"{self.key}: traffic policy must be one of {', '.join(TRAFFIC_POLICIES)}, "
                             f"got {self.traffic_policy!r}")

_FAMILY: dict[str, int] = {"IPv4": 4, "IPv6": 6}


class ServiceSpecError(Exception):
    """The Service asks for something impossible; the message says what to change."""

    reason = REASON_INVALID_REQUEST


@dataclass(frozen=True)
class ServiceRequest:
    key: str
    namespace: str
    traits: ServiceTraits
    families: tuple[int, ...]  # in the Service's ipFamilies order
    policy: str  # SingleStack | PreferDualStack | RequireDualStack
    requested: dict[int, IP] = field(default_factory=dict)  # family -> exact IP asked for
    pool: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    allocated_from: tuple[str, ...] = ()  # the pools our annotation says its IPs came from
    pool_from: str = names.ANN_ADDRESS_POOL  # the annotation that named `pool` (ours or MetalLB's)
    shown: tuple[IP, ...] = ()  # the IPs its status shows, whoever wrote them
    notes: tuple[str, ...] = ()  # annotations ignored because another spelling wins

    @property
    def required_families(self) -> tuple[int, ...]:
        """Families that must all be allocated, or none is (RequireDualStack)."""
        return self.families if self.policy == "RequireDualStack" else ()


def is_ours(svc: Object, load_balancer_class: str | None) -> bool:
    """A LoadBalancer Service whose class is ours: unset by default, exactly `load_balancer_class` if given."""
    spec = svc.get("spec") or {}
    if spec.get("type") != "LoadBalancer" or svc["metadata"].get("deletionTimestamp"):
        return False
    return spec.get("loadBalancerClass") == load_balancer_class


def traits_of(svc: Object) -> ServiceTraits:
    """What decides whether the Service may share an IP; ServiceSpecError if unreadable."""
    spec = svc.get("spec") or {}
    try:
        ports = frozenset((p.get("protocol") or "TCP", int(p["port"])) for p in spec.get("ports") or [])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ServiceSpecError(f"spec.ports is malformed: {spec.get('ports')!r}") from None
    policy = spec.get("externalTrafficPolicy") or "Cluster"
    if policy not in ("Cluster", "Local"):
        raise ServiceSpecError(f"externalTrafficPolicy {policy!r} is neither Cluster nor Local")
    selector = spec.get("selector")
    annotations = svc["metadata"].get("annotations") or {}
    return ServiceTraits(
        key=key_of(svc),
        sharing_key=ann.read(annotations, names.ANN_ALLOW_SHARED_IP).value or None,
        ports=ports,
        traffic_policy=policy,
        selector=frozenset(selector.items()) if isinstance(selector, dict) and selector else None,
    )


def _ingress(svc: Object) -> list[Object]:
    return list(((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


def _readable_ip(entry: Object) -> IP | None:
    try:
        return ipaddress.ip_address(entry.get("ip", ""))
    except ValueError:
        return None


def ingress_ips(svc: Object) -> list[IP]:
    """The IPs in status.loadBalancer.ingress (unparsable entries are ignored: not ours)."""
    return [ip for entry in _ingress(svc) if (ip := _readable_ip(entry)) is not None]


def foreign_ingress(svc: Object) -> list[Object]:
    """The ingress entries with no IP we can read (a hostname someone else wrote): kept as they are."""
    return [entry for entry in _ingress(svc) if _readable_ip(entry) is None]


def _parse_ip(text: str, where: str) -> IP:
    if not isinstance(text, str):  # the API's schema prevents it; a decision must not depend on that
        raise ServiceSpecError(f"{where}: {text!r} is not an IP address")
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ServiceSpecError(f"{where}: {text.strip()!r} is not an IP address") from None


def requested_ips(svc: Object) -> list[IP]:
    """IPs asked for by spec.loadBalancerIP or the leifur.io/load-balancer-ips annotation (or MetalLB's)."""
    spec = svc.get("spec") or {}
    asked = ann.read(svc["metadata"].get("annotations"), names.ANN_LOAD_BALANCER_IPS)
    from_spec = spec.get("loadBalancerIP") or ""
    from_annotation = asked.value or ""
    if from_spec and from_annotation:
        raise ServiceSpecError(
            f"both spec.loadBalancerIP and the {asked.source} annotation are set; use only the annotation"
        )
    if from_spec:
        return [_parse_ip(from_spec, "spec.loadBalancerIP")]
    ips = [_parse_ip(t, asked.source) for t in from_annotation.split(",") if t.strip()]
    if len({ip.version for ip in ips}) != len(ips):
        raise ServiceSpecError(f"{asked.source}: at most one IP per family, got {from_annotation!r}")
    return ips


def parse(svc: Object) -> ServiceRequest:
    """Everything the allocation needs from one Service; ServiceSpecError if it cannot be satisfied."""
    spec = svc.get("spec") or {}
    meta = svc["metadata"]
    policy = spec.get("ipFamilyPolicy") or "SingleStack"
    families = tuple(_FAMILY[f] for f in spec.get("ipFamilies") or ["IPv4"] if f in _FAMILY)
    if not families:
        raise ServiceSpecError(f"ipFamilies {spec.get('ipFamilies')!r} names neither IPv4 nor IPv6")
    if policy == "SingleStack":
        families = families[:1]
    requested: dict[int, IP] = {ip.version: ip for ip in requested_ips(svc)}
    for version, ip in requested.items():
        if version not in families:
            raise ServiceSpecError(
                f"requested IP {ip} is IPv{version}, but the Service's ipFamilies are "
                f"{spec.get('ipFamilies')} with ipFamilyPolicy {policy}"
            )
    if requested and policy == "RequireDualStack" and len(requested) < len(families):
        raise ServiceSpecError(
            "ipFamilyPolicy RequireDualStack: request one IP of each family, or none and let the pools choose"
        )
    annotations = meta.get("annotations") or {}
    named = ann.read(annotations, names.ANN_ADDRESS_POOL)
    pool = named.value
    if pool is not None and not pool.strip():
        raise ServiceSpecError(f"{named.source} is empty; name an IPAddressPool or remove it")
    return ServiceRequest(
        key=key_of(svc),
        namespace=meta["namespace"],
        traits=traits_of(svc),
        families=families,
        policy=policy,
        requested=requested,
        pool=pool.strip() if pool else None,
        pool_from=named.source,
        labels=dict(meta.get("labels") or {}),
        allocated_from=tuple(p.strip() for p in (annotations.get(names.ANN_ALLOCATED_FROM_POOL) or "").split(",")
                             if p.strip()),
        shown=tuple(ingress_ips(svc)),
        notes=tuple(ann.disagreements(annotations)),
    )
