"""The launched control plane behaves like a real one: Services, CRDs, watches, finalizers, RBAC."""

from __future__ import annotations

import ipaddress
import queue
import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from leifur_dev import controlplane
from leifur_dev.cluster import wait_crd_established

pytestmark = pytest.mark.controlplane

V4_RANGE, V6_RANGE = (ipaddress.ip_network(c) for c in controlplane.SERVICE_CIDRS)


def lb_service(name: str, **spec) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(
            type="LoadBalancer", selector={"app": name},
            ports=[client.V1ServicePort(name="http", port=80, protocol="TCP")], **spec,
        ),
    )


def test_loadbalancer_service_gets_cluster_ip_and_node_port_but_no_ingress(core, namespace):
    svc = core.create_namespaced_service(namespace, lb_service("web"))
    assert ipaddress.ip_address(svc.spec.cluster_ip) in V4_RANGE
    assert 30000 <= svc.spec.ports[0].node_port <= 32767
    # Nothing has assigned an external IP: the API server leaves status.loadBalancer empty.
    read = core.read_namespaced_service_status("web", namespace)
    assert not read.status.load_balancer.ingress


def test_ipv6_only_and_require_dual_stack_services_are_accepted(core, namespace):
    v6 = core.create_namespaced_service(
        namespace, lb_service("v6", ip_families=["IPv6"], ip_family_policy="SingleStack"))
    assert [ipaddress.ip_address(ip) in V6_RANGE for ip in v6.spec.cluster_ips] == [True]

    dual = core.create_namespaced_service(
        namespace, lb_service("dual", ip_families=["IPv4", "IPv6"], ip_family_policy="RequireDualStack"))
    assert dual.spec.ip_families == ["IPv4", "IPv6"]
    first, second = (ipaddress.ip_address(ip) for ip in dual.spec.cluster_ips)
    assert first in V4_RANGE and second in V6_RANGE


GROUP, VERSION, PLURAL = "test.leifur.io", "v1", "widgets"


@pytest.fixture
def widget_crd(api_client):
    ext = client.ApiextensionsV1Api(api_client)
    crd = client.V1CustomResourceDefinition(
        metadata=client.V1ObjectMeta(name=f"{PLURAL}.{GROUP}"),
        spec=client.V1CustomResourceDefinitionSpec(
            group=GROUP, scope="Namespaced",
            names=client.V1CustomResourceDefinitionNames(plural=PLURAL, singular="widget", kind="Widget"),
            versions=[client.V1CustomResourceDefinitionVersion(
                name=VERSION, served=True, storage=True,
                schema=client.V1CustomResourceValidation(open_apiv3_schema=client.V1JSONSchemaProps(
                    type="object",
                    properties={"spec": client.V1JSONSchemaProps(
                        type="object", properties={"size": client.V1JSONSchemaProps(type="integer", minimum=1)})},
                )),
            )],
        ),
    )
    ext.create_custom_resource_definition(crd)
    wait_crd_established(api_client, crd.metadata.name)
    yield
    ext.delete_custom_resource_definition(crd.metadata.name)


def _watch_into(api: client.CustomObjectsApi, namespace: str, events: queue.Queue, stop: threading.Event,
                resource_version: str):
    w = watch.Watch()
    for ev in w.stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, timeout_seconds=30,
                       resource_version=resource_version):
        obj = ev["object"]
        events.put((ev["type"], obj["metadata"]["name"], obj["metadata"].get("deletionTimestamp")))
        if stop.is_set():
            w.stop()


def _next_event(events: queue.Queue, kind: str) -> tuple:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ev = events.get(timeout=max(0.1, deadline - time.monotonic()))
        if ev[0] == kind:
            return ev
    raise AssertionError(f"no {kind} event")


def test_crd_objects_watch_events_and_finalizer_blocks_deletion(api_client, namespace, widget_crd):
    api = client.CustomObjectsApi(api_client)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    # Watching from the LIST's resourceVersion delivers every later change, however late the watch opens.
    rv = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["metadata"]["resourceVersion"]
    t = threading.Thread(target=_watch_into, args=(api, namespace, events, stop, rv), daemon=True)
    t.start()

    # Schema validation is real: size must be >= 1.
    with pytest.raises(ApiException) as bad:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
            "metadata": {"name": "bad"}, "spec": {"size": 0}})
    assert bad.value.status == 422

    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
        "metadata": {"name": "w1", "finalizers": ["leifur.io/test"]}, "spec": {"size": 3}})
    assert _next_event(events, "ADDED")[1] == "w1"

    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    # The finalizer holds the object: it is still there, marked for deletion.
    held = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    assert held["metadata"]["deletionTimestamp"]
    _, name, deletion = _next_event(events, "MODIFIED")
    assert (name, bool(deletion)) == ("w1", True)

    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1", {"metadata": {"finalizers": None}})
    assert _next_event(events, "DELETED")[1] == "w1"
    stop.set()
    with pytest.raises(ApiException) as gone:
        api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    assert gone.value.status == 404


def _token_client(control_plane, core, namespace: str, sa: str) -> client.CoreV1Api:
    """A client authenticated by a real ServiceAccount token (TokenRequest), not by impersonation."""
    token = core.create_namespaced_service_account_token(
        sa, namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
    ).status.token
    cfg = client.Configuration()
    cfg.host = control_plane.server
    cfg.ssl_ca_cert = str(control_plane.directory / "pki" / "ca.crt")
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.CoreV1Api(client.ApiClient(cfg))


def test_rbac_denies_what_a_narrow_role_does_not_grant(control_plane, api_client, core, namespace):
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="reader")))
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="service-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["services"], verbs=["get", "list"])]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="reader"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="service-reader"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)]))
    core.create_namespaced_service(namespace, lb_service("web"))

    as_sa = _token_client(control_plane, core, namespace, "reader")
    # RBAC is evaluated from a cache that the binding reaches a moment after it is written.
    deadline = time.monotonic() + 10
    while True:
        try:
            names = [s.metadata.name for s in as_sa.list_namespaced_service(namespace).items]
            break
        except ApiException as e:
            if e.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert names == ["web"]
    assert as_sa.read_namespaced_service("web", namespace).metadata.name == "web"

    denied = [
        lambda: as_sa.create_namespaced_service(namespace, lb_service("other")),
        lambda: as_sa.delete_namespaced_service("web", namespace),
        lambda: as_sa.patch_namespaced_service_status("web", namespace, {"status": {"loadBalancer": {}}}),
        lambda: as_sa.list_namespaced_secret(namespace),
        lambda: as_sa.list_namespaced_service("default"),
        lambda: as_sa.list_node(),
    ]
    for attempt in denied:
        with pytest.raises(ApiException) as e:
            attempt()
        assert e.value.status == 403
