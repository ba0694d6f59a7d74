"""Events land on the right object and namespace, repeats are aggregated, trouble never reaches the caller."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from leifur.kube.client import request
from leifur.kube.events import EventRecorder
from leifur_dev.cluster import create_test_crd

pytestmark = pytest.mark.controlplane

GROUP, VERSION, PLURAL, KIND = "kubetest.leifur.io", "v1", "doohickeys", "Doohickey"


@pytest.fixture
def recorder(api_client) -> Iterator[EventRecorder]:
    rec = EventRecorder(api_client, "leifur-test", host="node-1")
    yield rec
    rec.stop()


def events_about(api_client, namespace: str, uid: str) -> list[dict]:
    found = request(api_client, "GET", f"/api/v1/namespaces/{namespace}/events",
                    query=[("fieldSelector", f"involvedObject.uid={uid}")])
    return found["items"]


def make_service(api_client, namespace: str, name: str) -> dict:
    return request(api_client, "POST", f"/api/v1/namespaces/{namespace}/services", body={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})


def test_event_on_a_service_and_repeats_increase_count(api_client, namespace, recorder):
    svc = make_service(api_client, namespace, "web")
    meta = svc["metadata"]
    recorder.event(svc, "Warning", "AllocationFailed", "no address left in pool gold")
    assert recorder.flush(10)

    (ev,) = events_about(api_client, namespace, meta["uid"])
    assert ev["involvedObject"] == {"apiVersion": "v1", "kind": "Service", "name": "web", "namespace": namespace,
                                    "uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
    assert (ev["type"], ev["reason"], ev["message"]) == ("Warning", "AllocationFailed",
                                                        "no address left in pool gold")
    assert ev["source"] == {"component": "leifur-test", "host": "node-1"}
    assert (ev["reportingComponent"], ev["reportingInstance"]) == ("leifur-test", "node-1")
    assert ev["count"] == 1 and ev["firstTimestamp"] == ev["lastTimestamp"]

    time.sleep(1.1)  # timestamps have one-second resolution
    recorder.event(svc, "Warning", "AllocationFailed", "no address left in pool gold")
    recorder.event(svc, "Warning", "AllocationFailed", "no address left in pool gold")
    assert recorder.flush(10)
    (again,) = events_about(api_client, namespace, meta["uid"])
    assert again["metadata"]["name"] == ev["metadata"]["name"]
    assert again["count"] == 3
    assert again["lastTimestamp"] > again["firstTimestamp"] == ev["firstTimestamp"]

    # A different message is a different Event.
    recorder.event(svc, "Normal", "IPAllocated", "assigned 192.0.2.10 from pool gold")
    assert recorder.flush(10)
    events = events_about(api_client, namespace, meta["uid"])
    assert sorted((e["reason"], e["count"]) for e in events) == [("AllocationFailed", 3), ("IPAllocated", 1)]


def test_event_on_a_cluster_scoped_object_goes_to_default(api_client, doohickey_crd, recorder):
    path = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
    obj = request(api_client, "POST", path, body={"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                                                  "metadata": {"name": "pool-a"}, "spec": {}})
    recorder.event(obj, "Warning", "InvalidSpec", "overlaps pool-b")
    recorder.event(obj, "Warning", "InvalidSpec", "overlaps pool-b")
    assert recorder.flush(10)
    (ev,) = events_about(api_client, "default", obj["metadata"]["uid"])
    assert ev["involvedObject"] == {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": "pool-a",
                                    "uid": obj["metadata"]["uid"],
                                    "resourceVersion": obj["metadata"]["resourceVersion"]}
    assert ev["count"] == 2


def test_api_errors_and_a_full_queue_never_reach_the_caller(api_client, caplog):
    def dropped() -> float:
        return REGISTRY.get_sample_value("leifur_events_dropped_total", {"component": "leifur-unreachable"}) or 0

    # A server that accepts connections and never answers: every write hangs until its timeout,
    # so a recorder that waited for the API would take at least that long on its first event.
    timeout = 3.0
    hang = socket.create_server(("127.0.0.1", 0), backlog=64)
    cfg = client.Configuration(host=f"https://127.0.0.1:{hang.getsockname()[1]}")
    rec = EventRecorder(client.ApiClient(cfg), "leifur-unreachable", queue_size=5, request_timeout=timeout)
    obj = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "s", "namespace": "nowhere", "uid": "u-1", "resourceVersion": "1"}}
    before = dropped()
    started = time.monotonic()
    for i in range(50):
        rec.event(obj, "Normal", "Test", f"message {i}")
    assert time.monotonic() - started < timeout  # never waits for the API
    assert rec.flush(60)
    hang.close()
    assert dropped() - before == 50  # each one either did not fit or failed, and is counted
    assert any("queue full" in r.getMessage() for r in caplog.records)
    assert any("could not record event" in r.getMessage() for r in caplog.records)

    rec.event({"kind": "Service"}, "Normal", "Test", "no name")  # malformed: logged, not raised
    with pytest.raises(ValueError):
        rec.event(obj, "Info", "Test", "bad type")
    rec.stop()
    rec.event(obj, "Normal", "Test", "after stop is ignored")


def test_an_event_in_a_missing_namespace_is_logged_not_raised(api_client, recorder, caplog):
    obj = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "s", "namespace": "no-such-namespace", "uid": "u-2", "resourceVersion": "1"}}
    recorder.event(obj, "Normal", "Test", "lost")
    assert recorder.flush(10)
    assert any("could not record event" in r.getMessage() and "404" in r.getMessage() for r in caplog.records)


@pytest.fixture(scope="module")
def doohickey_crd(api_client) -> Iterator[None]:
    name = create_test_crd(api_client, GROUP, VERSION, PLURAL, KIND)
    yield
    client.ApiextensionsV1Api(api_client).delete_custom_resource_definition(name)
