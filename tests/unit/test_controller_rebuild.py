"""The controller's rebuild after a restart (also what leifurctl computes): pure, no API."""

from __future__ import annotations

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


def test_only_services_that_hold_ours_count():
    s = state()
    s.adopt_all([svc("nofinalizer", "192.0.2.42", "t", finalizer=False),
                 svc("otherclass", "192.0.2.43", "t", loadBalancerClass="example.com/other"),
                 svc("malformed", "192.0.2.44", "t", externalTrafficPolicy=7)], None)
    assert s.allocator.ips_of("ns/nofinalizer") == [] and s.allocator.ips_of("ns/otherclass") == []
    # A Service the controller cannot parse still keeps its IP (its own sync reports the problem).
    assert [str(ip) for ip in s.allocator.ips_of("ns/malformed")] == ["192.0.2.44"]
