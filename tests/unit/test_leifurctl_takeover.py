"""`leifurctl migrate check`: what a takeover would do to each Service, decided with the controller's
and the agents' code from a snapshot of a cluster MetalLB numbered."""

from __future__ import annotations

import pytest

from leifur.announce.election import rank
from leifur.cli import takeover
from leifur.cli.snapshot import Snapshot
from leifur.model import names

NODES = ["node-a", "node-b"]
POOL = {"metadata": {"name": "lan"}, "spec": {"addresses": ["192.0.2.32/27"]}}
ADVERTISEMENT = {"metadata": {"name": "lan"}, "spec": {"ipAddressPools": ["lan"]}}


def svc(name: str, *ips: str, created: str = "2026-01-01T00:00:00Z", annotations: dict | None = None,
        port: int = 80, **spec) -> dict:
    """A Service as MetalLB leaves it: its IPs in the status, none of Leifur's marks."""
    return {"metadata": {"namespace": "apps", "name": name, "creationTimestamp": created,
                         "annotations": {"metallb.io/ip-allocated-from-pool": "lan", **(annotations or {})}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": port, "protocol": "TCP"}], **spec},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def ready(name: str) -> dict:
    return {"metadata": {"namespace": "apps", "labels": {"kubernetes.io/service-name": name}},
            "endpoints": [{"nodeName": n, "conditions": {"ready": True}} for n in NODES]}


SHARE = {"metallb.io/allow-shared-ip": "k"}
CASES = [
    # name, the Services (the one checked is the last), with endpoints?, advertisements, state, problem
    ("numbered-by-metallb-keeps-its-ip", [svc("web", "192.0.2.40")], True, [ADVERTISEMENT], "Keeps", False),
    ("no-ip-yet-gets-one", [svc("web")], True, [ADVERTISEMENT], "New", False),
    ("outside-every-pool-is-reported", [svc("web", "198.51.100.7")], True, [ADVERTISEMENT], "Reported", True),
    ("a-younger-one-showing-an-ip-it-may-not-share-is-reported",
     [svc("old", "192.0.2.40"), svc("web", "192.0.2.40", created="2026-02-01T00:00:00Z")], True, [ADVERTISEMENT],
     "Reported", True),
    ("shared-under-metallbs-key-both-keep",
     [svc("old", "192.0.2.40", annotations=SHARE), svc("web", "192.0.2.40", annotations=SHARE, port=81)], True,
     [ADVERTISEMENT], "Keeps", False),
    ("a-requested-ip-elsewhere-changes-it",
     [svc("web", "192.0.2.40", annotations={"metallb.io/loadBalancerIPs": "192.0.2.41"})], True, [ADVERTISEMENT],
     "Changes", True),
    ("kept-but-no-advertisement-selects-its-pool", [svc("web", "192.0.2.40")], True, [], "Keeps", True),
    ("kept-and-without-endpoints-not-announced-as-now", [svc("web", "192.0.2.40")], False, [ADVERTISEMENT],
     "Keeps", False),
]


@pytest.mark.parametrize(("services", "endpoints", "ads", "state", "problem"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_what_a_takeover_would_do(services, endpoints, ads, state, problem) -> None:
    snap = Snapshot(services=services, pools=[POOL], advertisements=ads, nodes=[{"metadata": {"name": n}}
                                                                                 for n in NODES],
                    endpoint_slices=[ready(s["metadata"]["name"]) for s in services] if endpoints else [])
    verdicts = {v.key: v for v in takeover.check(snap, None)}
    v = verdicts["apps/web"]
    assert (v.state, v.problem) == (state, problem), v
    if state == "Keeps" and not problem and endpoints:
        (ip,) = v.after
        assert v.nodes == {ip: rank(NODES, ip)[0]}  # the agents' own election


def test_services_of_another_class_are_not_checked_and_the_report_says_what_is_wrong_first() -> None:
    snap = Snapshot(services=[svc("web", "192.0.2.40"), svc("elsewhere", "192.0.2.41", loadBalancerClass="x"),
                              svc("bad", "198.51.100.7")],
                    pools=[POOL], advertisements=[ADVERTISEMENT], nodes=[{"metadata": {"name": "node-a"}}])
    rep = takeover.report(snap, None)
    assert sorted(s["service"] for s in rep["services"]) == ["apps/bad", "apps/web"] and not rep["ok"]
    text = takeover.render(rep)
    assert text.splitlines()[1].startswith("apps/bad") and "1 of 2 Services would keep" in text
    assert names.ANN_ALLOCATED_FROM_POOL not in snap.services[0]["metadata"]["annotations"]  # nothing changed


def test_planned_objects_stand_in_for_the_clusters_of_the_same_name() -> None:
    old_pool = {"metadata": {"name": "lan"}, "spec": {"addresses": ["198.51.100.0/24"]}}
    other = {"metadata": {"name": "other"}, "spec": {"addresses": ["203.0.113.0/24"]}}
    snap = Snapshot(services=[svc("web", "192.0.2.40")], pools=[old_pool, other],
                    nodes=[{"metadata": {"name": "node-a"}}])
    planned = [{"kind": "IPAddressPool", **POOL}, {"kind": "L2Advertisement", **ADVERTISEMENT}]
    merged = takeover.with_planned(snap, planned)
    assert [p["spec"]["addresses"] for p in merged.pools] == [["203.0.113.0/24"], ["192.0.2.32/27"]]
    assert [a["metadata"]["name"] for a in merged.advertisements] == ["lan"]
    assert snap.pools == [old_pool, other]  # the snapshot itself is left as read
    [v] = takeover.check(merged, None)
    assert v.state == "Keeps" and not v.problem
    [v] = takeover.check(snap, None)
    assert v.state == "Reported"  # with the cluster's pool alone, 192.0.2.40 is in none
