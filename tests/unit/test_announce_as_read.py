"""What an agent's caches keep: parts equal across objects are one object (that the plans read
the same from it: test_agent_plan.py), and a value against the schema is kept, not a crash."""

from __future__ import annotations

from leifur.announce import as_read


def svc(name: str, policy: str = "Cluster") -> dict:
    return {"metadata": {"name": name, "namespace": "ns"}, "status": {},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "ports": [{"port": 80}]}}


def eps(*nodes: str) -> dict:
    return {"metadata": {"name": "x", "namespace": "ns"},
            "endpoints": [{"addresses": [f"192.0.2.{i}"], "nodeName": n, "conditions": {"ready": True}}
                          for i, n in enumerate(nodes)]}


def test_equal_parts_are_shared_and_different_ones_are_not():
    a, b, c = (as_read.service(s) for s in (svc("a"), svc("b"), svc("c", policy="Local")))
    assert a["spec"] is b["spec"] and a["spec"] is not c["spec"]
    assert c["spec"] == {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}
    one, two = as_read.endpoint_slice(eps("n1", "n2", "n1")), as_read.endpoint_slice(eps("n2"))
    assert [e["nodeName"] for e in one["endpoints"]] == ["n1", "n2"]  # n1's second Pod adds nothing
    assert one["endpoints"][1] is two["endpoints"][0]


def test_values_against_the_schema_are_kept_as_they_are():
    odd = svc("a")
    odd["spec"]["loadBalancerClass"] = ["not", "a", "string"]
    assert as_read.service(odd)["spec"]["loadBalancerClass"] == ["not", "a", "string"]
    s = eps("n1")
    s["endpoints"][0]["nodeName"] = {"odd": 1}
    assert as_read.endpoint_slice(s)["endpoints"] == [{"nodeName": {"odd": 1}, "conditions": {"ready": True}}]


def test_a_services_annotations_are_shared_with_those_of_services_that_have_the_same():
    a, b, c = svc("a"), svc("b"), svc("c")
    for s, pool in ((a, "v6"), (b, "v6"), (c, "v4")):
        s["metadata"]["annotations"] = {"leifur.io/ip-allocated-from-pool": pool}
    ka, kb, kc = (as_read.service(s) for s in (a, b, c))
    assert ka["metadata"]["annotations"] is kb["metadata"]["annotations"]
    assert kc["metadata"]["annotations"] == {"leifur.io/ip-allocated-from-pool": "v4"}


def test_a_record_keeps_the_ips_and_macs_the_agents_read():
    r = {"kind": "L2NodeStatus", "metadata": {"name": "n1", "uid": "u", "resourceVersion": "3", "labels": {}},
         "status": {"count": 2, "ips": "192.0.2.1,192.0.2.2", "macs": ["02:00:00:00:00:01"],
                    "announcements": [{"ip": "192.0.2.1", "services": ["ns/a"], "interfaces": ["eth0"],
                                       "mode": "Responder", "since": "2026-01-01T00:00:00Z"},
                                      {"ip": "192.0.2.2", "services": ["ns/b"]}, "malformed"]}}
    assert as_read.record(r) == {"kind": "L2NodeStatus", "metadata": {"name": "n1", "uid": "u", "resourceVersion": "3"},
                                 "status": {"announcements": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}],
                                            "macs": ["02:00:00:00:00:01"]}}
