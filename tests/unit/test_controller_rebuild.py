"""The controller's rebuild after a restart (also what leifurctl computes): pure, no API."""

from __future__ import annotations

import pytest

from leifur.controller.reconcile import State
from leifur.model import names

POOL = {"metadata": {"name": "lan"}, "spec": {"addresses": ["192.0.2.40-192.0.2.49"]}}


def svc(name: str, ip: str, created: str, *, finalizer: bool = True, port: int = 80, **spec) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created,
                         "finalizers": [names.SERVICE_FINALIZER] if finalizer else []},
            "spec": {"type": "LoadBalancer", "ports": [{"port": port, "protocol": "TCP"}], **spec},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}


def state() -> State:
    s = State()
    s.refresh_pools([POOL])
    return s


def test_every_ip_held_is_adopted_and_the_older_service_keeps_a_disputed_one():
    s = state()
    younger = svc("b", "192.0.2.40", "2026-01-02T00:00:00Z", port=81)
    older = svc("a", "192.0.2.40", "2026-01-01T00:00:00Z")
    other = svc("c", "192.0.2.41", "2026-01-03T00:00:00Z")
    lost = s.adopt_all([younger, other, older], None)
    assert [str(ip) for ip in s.allocator.ips_of("ns/a")] == ["192.0.2.40"]
    assert [str(ip) for ip in s.allocator.ips_of("ns/c")] == ["192.0.2.41"]
    assert s.allocator.ips_of("ns/b") == []
    [(key, holders, why)] = lost
    assert key == "ns/b" and holders == ["ns/a"] and "192.0.2.40" in why


LOADED_CASES = [
    ("ours-with-our-finalizer", {}, True),
    ("ours-without-it-numbered-by-someone-else", {"finalizer": False}, True),
    ("of-another-class", {"loadBalancerClass": "example.com/other", "finalizer": False}, False),
    ("moved-to-another-class-with-our-finalizer", {"loadBalancerClass": "example.com/other"}, False),
    ("no-longer-a-load-balancer", {"type": "ClusterIP", "finalizer": False}, False),
    ("being-deleted-with-our-finalizer", {"deleting": True}, True),
    ("being-deleted-without-it", {"deleting": True, "finalizer": False}, False),
    # One the controller cannot parse still keeps its IP (its own sync reports the problem).
    ("malformed", {"externalTrafficPolicy": 7}, True),
]


@pytest.mark.parametrize(("change", "loaded"), [c[1:] for c in LOADED_CASES], ids=[c[0] for c in LOADED_CASES])
def test_which_services_ips_are_loaded_before_anything_is_allocated(change: dict, loaded: bool) -> None:
    change = dict(change)
    obj = svc("s", "192.0.2.42", "t", finalizer=change.pop("finalizer", True))
    if change.pop("deleting", False):
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    obj["spec"].update(change)
    s = state()
    s.adopt_all([obj], None)
    assert [str(ip) for ip in s.allocator.ips_of("ns/s")] == (["192.0.2.42"] if loaded else [])


def test_a_service_we_numbered_keeps_a_disputed_ip_over_an_older_newcomer():
    s = state()
    newcomer = svc("metallbs", "192.0.2.40", "2026-01-01T00:00:00Z", finalizer=False, port=81)
    ours = svc("ours", "192.0.2.40", "2026-01-02T00:00:00Z")
    [(key, holders, _why)] = s.adopt_all([newcomer, ours], None)
    assert key == "ns/metallbs" and holders == ["ns/ours"]
    assert [str(ip) for ip in s.allocator.ips_of("ns/ours")] == ["192.0.2.40"]
