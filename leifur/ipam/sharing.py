"""When two Services may share one IP (MetalLB's rules for leifur.io/allow-shared-ip)."""

from __future__ import annotations

from collections.abc import Iterable

from leifur.model.service import ServiceTraits


def _ports_text(ports: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{port}/{protocol}" for protocol, port in sorted(ports, key=lambda p: (p[1], p[0])))


def incompatibility(a: ServiceTraits, b: ServiceTraits) -> str | None:
    """None if a and b may hold the same IP; otherwise why not, in a few words.

    The answer is symmetric (only the wording depends on the order): b is the one already holding the IP.
    """
    if a.key == b.key:
        return None
    if b.sharing_key is None:
        return f"{b.key} holds it and does not share (no leifur.io/allow-shared-ip)"
    if a.sharing_key is None:
        return f"{a.key} does not allow sharing (no leifur.io/allow-shared-ip)"
    if a.sharing_key != b.sharing_key:
        return f"sharing keys differ ({a.sharing_key!r} vs {b.sharing_key!r})"
    common = a.ports & b.ports
    if common:
        verb = "is" if len(common) == 1 else "are"
        noun = "port" if len(common) == 1 else "ports"
        return f"{noun} {_ports_text(common)} {verb} used by both"
    if a.traffic_policy != b.traffic_policy:
        local, cluster = (a, b) if a.traffic_policy == "Local" else (b, a)
        return (f"{local.key} has externalTrafficPolicy Local and {cluster.key} Cluster; "
                "a shared IP must be announced from the same nodes for both")
    if a.traffic_policy == "Local":
        if a.selector is None or b.selector is None:
            return "with externalTrafficPolicy Local both need a pod selector, and one has none"
        if a.selector != b.selector:
            return "with externalTrafficPolicy Local both must select the same pods, and their selectors differ"
    return None
