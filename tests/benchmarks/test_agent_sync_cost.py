"""What one agent sync costs in CPU at thousands of Services: reading the caches, then deciding.

LEIFUR_BENCHMARKS=1 pytest tests/benchmarks/test_agent_sync_cost.py -s

In-process, no I/O: the informers are fed the objects as watch events would be. The baselines in
the same run: the deep copy of every object that each sync made before (Informer.objects), and,
once a node died, deciding every IP anew.
"""

from __future__ import annotations

import ipaddress
import os
import time

import pytest

from leifur.announce import plan
from leifur.kube.informer import Informer

pytestmark = [pytest.mark.benchmark]

SIZES = [int(n) for n in os.environ.get("LEIFUR_SYNC_SIZES", "1000,5000,10000").split(",")]
NODES = [f"node{i}" for i in range(10)]


def _informers(count: int) -> tuple[Informer, ...]:
    """Services, EndpointSlices, Nodes, pools and advertisements as a 10-node cluster's informers hold them."""
    services, slices, nodes, pools, ads = (Informer(None, f"/{r}", r)  # type: ignore[arg-type]
                                           for r in ("services", "endpointslices", "nodes", "pools", "ads"))
    first = ipaddress.ip_address("2001:db8::1000")
    for i in range(count):
        meta = {"namespace": "apps", "name": f"s{i}", "resourceVersion": str(i), "uid": f"uid-{i}",
                "annotations": {"leifur.io/ip-allocated-from-pool": "v6"}, "labels": {"app": f"s{i}"},
                "finalizers": ["leifur.io/load-balancer"]}
        services._handle_event({"type": "ADDED", "object": {
            "kind": "Service", "apiVersion": "v1", "metadata": meta,
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": f"s{i}"},
                     "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack", "clusterIP": f"2001:db8:ffff::{i:x}"},
            "status": {"loadBalancer": {"ingress": [{"ip": str(first + i), "ipMode": "VIP"}]}}}})
        slices._handle_event({"type": "ADDED", "object": {
            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"namespace": "apps", "name": f"s{i}-x", "resourceVersion": str(i),
                         "labels": {"kubernetes.io/service-name": f"s{i}"}},
            "addressType": "IPv6", "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"2001:db8:1::{j}"], "nodeName": n, "conditions": {"ready": True}}
                          for j, n in enumerate(NODES)]}})
    for n in NODES:
        nodes._handle_event({"type": "ADDED", "object": {"kind": "Node", "metadata": {"name": n, "labels": {}}}})
    pools._handle_event({"type": "ADDED", "object": {"kind": "IPAddressPool", "metadata": {"name": "v6"},
                                                     "spec": {"addresses": ["2001:db8::1000/100"]}}})
    ads._handle_event({"type": "ADDED", "object": {"kind": "L2Advertisement", "metadata": {"name": "lan"},
                                                   "spec": {"ipAddressPools": ["v6"], "interfaces": ["eth0"]}}})
    return services, slices, nodes, pools, ads


def _best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


@pytest.mark.parametrize("count", SIZES)
def test_one_sync_reads_and_decides(count):
    informers = _informers(count)

    def read(copy: bool) -> plan.Cluster:
        return plan.Cluster(*(i.objects() if copy else i.shared() for i in informers))

    copied = _best(lambda: read(True))
    shared = _best(lambda: read(False))
    cluster = read(False)
    decided = _best(lambda: plan.decide_announcements(cluster, NODES), repeat=3)
    everyone = plan.decide_announcements(cluster, NODES)
    assert len(everyone) == count
    # A node died: every IP decided anew (the baseline), or only the dead node's (before=).
    survivors = frozenset(NODES[1:])
    anew = _best(lambda: plan.decide_announcements(cluster, survivors), repeat=3)
    again = _best(lambda: plan.decide_announcements(cluster, survivors, before=(frozenset(NODES), everyone)))
    assert plan.decide_announcements(cluster, survivors, before=(frozenset(NODES), everyone)) == \
        plan.decide_announcements(cluster, survivors)
    print(f"\n{count} Services, 10 nodes, CPU per sync (best of 5): reading the caches with a deep copy "
          f"(before) {copied * 1000:.0f} ms, shared {shared * 1000:.1f} ms; deciding {decided * 1000:.0f} ms; "
          f"a sync went from {(copied + decided) * 1000:.0f} to {(shared + decided) * 1000:.0f} ms")
    print(f"  a node died: deciding every IP anew {anew * 1000:.0f} ms, only its IPs "
          f"({sum(1 for d in everyone.values() if d.announcement and d.announcement.node == NODES[0])}) "
          f"{again * 1000:.1f} ms")
