"""The controller's Service writer against the real API server: a new Service's finalizer, pool
annotation and IP in one write, and never an IP that shows without the finalizer."""

from __future__ import annotations

import pytest
from kubernetes import watch

from leifur.controller.writes import ServiceWriter, condition
from leifur.model import names

pytestmark = pytest.mark.controlplane

FIN = names.SERVICE_FINALIZER
POOL = names.ANN_ALLOCATED_FROM_POOL


def allocate(writer: ServiceWriter, svc: dict, ip: str) -> dict:
    conditions = condition(None, names.COND_SERVICE_ALLOCATED, True, "Allocated", f"{ip} from lan", 1)
    return writer.patch_status(svc, [{"ip": ip, "ipMode": "VIP"}], conditions, [FIN], {POOL: "lan"})


def versions(env, name: str, since: str, count: int) -> list[dict]:
    """The first `count` versions of Service `name` written after resourceVersion `since`."""
    seen: list[dict] = []
    w = watch.Watch()
    for event in w.stream(env.cluster.core.list_namespaced_service, env.ns, resource_version=since,
                          field_selector=f"metadata.name={name}", timeout_seconds=20,
                          _preload_content=True):
        seen.append(env.cluster.api_client.sanitize_for_serialization(event["object"]))
        if len(seen) == count:
            w.stop()
    return seen


def shows(obj: dict) -> tuple[bool, list[str]]:
    """Whether it carries our finalizer, and the IPs its status shows."""
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return FIN in (obj["metadata"].get("finalizers") or []), [i["ip"] for i in ingress]


def test_a_new_service_takes_one_write_once_the_api_server_has_shown_it_keeps_metadata_on_status(env):
    writer = ServiceWriter(env.cluster.api_client)
    first, second = env.svc("first"), env.svc("second")
    assert writer.status_keeps_metadata is None

    # Not yet known: the finalizer and the annotation first (through /status, which shows no IP),
    # then the IP.
    allocate(writer, first, "203.0.113.1")
    assert writer.status_keeps_metadata is True
    history = versions(env, "first", first["metadata"]["resourceVersion"], 2)
    assert [shows(v) for v in history] == [(True, []), (True, ["203.0.113.1"])]

    # Known: one write carries the finalizer, the annotation, the IP and the condition.
    written = allocate(writer, second, "203.0.113.2")
    history = versions(env, "second", second["metadata"]["resourceVersion"], 1)
    assert [v["metadata"]["resourceVersion"] for v in history] == [written["metadata"]["resourceVersion"]]
    stored = env.cluster.service(env.ns, "second")
    assert shows(stored) == (True, ["203.0.113.2"])
    assert stored["metadata"]["annotations"][POOL] == "lan"
    assert [c["reason"] for c in stored["status"]["conditions"]] == ["Allocated"]
