"""What the LIST's page size leaves in an agent's memory: 5,000 Services and their EndpointSlices,
as the lab's API server writes them, read page by page by the agent's own informers.

LEIFUR_BENCHMARKS=1 pytest tests/benchmarks/test_list_page_memory.py -s

Each page size runs in a fresh process that first imports the agent (as the agent's own process
has); the figure is its resident memory after the two LISTs against before. The baseline in the
same run is client-go's page of 500. No API server: the pages are made in the process, encoded
and decoded as an answer would be (leifur.kube.client.request), one at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.benchmark]

COUNT = int(os.environ.get("LEIFUR_SCALE_BIG", "5000"))
PAGES = [500, 250, 100, 50]
# What server-side apply records of a write by a Python client: dropped by the informer, but decoded.
_MANAGED = [{"manager": "python", "operation": "Update", "apiVersion": "v1", "time": "2026-12-02T22:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:allocateLoadBalancerNodePorts": {}, "f:ports": {
                 ".": {}, 'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {}}}}}}]


def _service(i: int) -> dict:
    ip, when = f"2001:db8::{0x1000 + i:x}", f"2026-12-02T22:{i // 60 % 60:02d}:{i % 60:02d}Z"
    return {"metadata": {"namespace": "lab-apps", "name": f"s{i}", "uid": f"0b3c{i:08d}-aaaa-bbbb-cccc-ddddeeeeffff",
                         "resourceVersion": str(100000 + i), "creationTimestamp": when,
                         "annotations": {"leifur.io/ip-allocated-from-pool": "lab-v6"},
                         "finalizers": ["leifur.io/load-balancer"], "managedFields": _MANAGED},
            "spec": {"ports": [{"name": "p80", "protocol": "TCP", "port": 80, "targetPort": 80}],
                     "clusterIP": f"2001:db8:ffff::{i:x}", "clusterIPs": [f"2001:db8:ffff::{i:x}"],
                     "type": "LoadBalancer", "sessionAffinity": "None", "externalTrafficPolicy": "Cluster",
                     "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                     "allocateLoadBalancerNodePorts": False, "internalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]},
                       "conditions": [{"type": "leifur.io/IPAllocated", "status": "True", "observedGeneration": 1,
                                       "lastTransitionTime": when, "reason": "Allocated",
                                       "message": f"{ip} from pool lab-v6"}]}}


def _slice(i: int) -> dict:
    return {"metadata": {"namespace": "lab-apps", "name": f"s{i}-lab",
                         "uid": f"1b3c{i:08d}-aaaa-bbbb-cccc-ddddeeeeffff", "resourceVersion": str(200000 + i),
                         "generation": 1, "creationTimestamp": "2026-12-02T22:00:00Z",
                         "labels": {"kubernetes.io/service-name": f"s{i}"}, "managedFields": _MANAGED},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [f"192.0.2.{n}"], "nodeName": f"lab-node{n}", "conditions": {"ready": True}}
                          for n in range(1, 11)],
            "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}]}


def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child(page: int) -> None:
    """In a fresh process: list COUNT Services and slices through the agent's informers, print the
    RSS they added in kB."""
    import gc
    import threading

    import leifur.agent.main  # noqa: F401  (the agent's imports, as in its process)
    from leifur.announce import as_read
    from leifur.kube import informer

    kinds = {"/s": ("ServiceList", _service), "/e": ("EndpointSliceList", _slice)}

    def answer(_client: object, _method: str, path: str, *, query: list, timeout: float) -> dict:
        kind, make = kinds[path]
        start = int(dict(query).get("continue") or 0)
        end = min(COUNT, start + page)
        body = json.dumps({"kind": kind, "apiVersion": "v1",
                           "metadata": {"resourceVersion": "300000", **({"continue": str(end)} if end < COUNT else {})},
                           "items": [make(i) for i in range(start, end)]}).encode()
        return json.loads(body.decode())  # as client.request decodes an answer

    informer.request = answer  # type: ignore[assignment]
    gc.collect()
    before = _kib("VmRSS")
    caches = [informer.Informer(None, "/s", "services", keep=as_read.service, page_size=page),  # type: ignore[arg-type]
              informer.Informer(None, "/e", "endpointslices", keep=as_read.endpoint_slice, page_size=page)]  # type: ignore[arg-type]
    threads = [threading.Thread(target=c._list_and_replace) for c in caches]  # the agent lists them at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert all(len(c.keys()) == COUNT for c in caches)
    print(json.dumps({"added": _kib("VmRSS") - before}))


def _run(page: int) -> int:
    here = os.path.dirname(__file__)
    code = f"import sys; sys.path.insert(0, {here!r}); import test_list_page_memory as t; t.child({page})"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])["added"]


def test_page_size_and_what_the_lists_leave():
    runs = 3
    added = {page: sorted(_run(page) for _ in range(runs)) for page in PAGES}
    print(f"\n{COUNT} Services and {COUNT} EndpointSlices (10 endpoints each) listed by the agent's informers; "
          f"RSS added, median (min-max) of {runs} fresh processes:")
    for page, kib in added.items():
        print(f"  {page:>4} per page: {kib[1] / 1024:.1f} MB ({kib[0] / 1024:.1f}-{kib[-1] / 1024:.1f})"
              + ("  (client-go's default, the baseline)" if page == 500 else ""))
    assert all(kib[0] > 0 for kib in added.values())
