"""deploy/ installed through an overlay in another namespace and with a name prefix (the usual way to
install elsewhere): the admission policies still keep each agent to its own node's record, and the
controller's writes to the leader of its Lease."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur.model.settings import ControllerSettings
from leifur_dev import controlplane, gobuild
from leifur_dev.cluster import (
    REPO,
    ControllerProcess,
    apply_node_status,
    metrics_reader_token,
    service_account_kubeconfig,
    wait_denied_another_record,
    wait_for,
)

pytestmark = pytest.mark.controlplane

NAMESPACE, PREFIX = "lf-elsewhere", "other-"
OVERLAY = f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {NAMESPACE}
namePrefix: {PREFIX}
resources:
  - ../deploy
"""


@pytest.fixture(scope="module")
def cp(tmp_path_factory) -> Iterator[controlplane.ControlPlane]:
    # A control plane of its own: the session's has deploy/ installed as it is, whose policy would
    # deny for this one and so hide whether the overlay's own policy works.
    plane = controlplane.start()
    try:
        yield plane
    finally:
        plane.stop()


def apply_overlay(cp, work: Path, kustomization: str) -> client.ApiClient:
    """`kustomization` as an overlay beside a copy of deploy/ in `work`, applied server-side."""
    shutil.copytree(REPO / "deploy", work / "deploy")
    (work / "overlay").mkdir()
    (work / "overlay" / "kustomization.yaml").write_text(kustomization)
    kubectl = str(gobuild.ensure_built("kubectl"))
    res = subprocess.run([kubectl, "--kubeconfig", str(cp.kubeconfig), "apply", "--server-side",
                          "-k", str(work / "overlay")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return config.new_client_from_config(str(cp.kubeconfig))


@pytest.fixture(scope="module")
def installed(cp, tmp_path_factory) -> Iterator[tuple[client.ApiClient, list[str]]]:
    api = apply_overlay(cp, tmp_path_factory.mktemp("overlay"), OVERLAY)
    core = client.CoreV1Api(api)
    suffix = uuid.uuid4().hex[:6]
    nodes = [f"ov-{suffix}-a", f"ov-{suffix}-b"]
    for n in nodes:
        core.create_node({"metadata": {"name": n}})
        core.create_namespaced_pod(NAMESPACE, {
            "metadata": {"name": f"agent-{n}"},
            "spec": {"nodeName": n, "serviceAccountName": PREFIX + names.AGENT_NAME,
                     "containers": [{"name": "agent", "image": "leifur:dev"}]}})
    yield api, nodes


def as_agent_on(cp, api: client.ApiClient, node: str, path: Path) -> client.ApiClient:
    kubeconfig = service_account_kubeconfig(api, cp.server, cp.directory / "pki" / "ca.crt", NAMESPACE,
                                            PREFIX + names.AGENT_NAME, path, bound_pod=f"agent-{node}")
    return config.new_client_from_config(str(kubeconfig))


def test_an_agent_installed_elsewhere_writes_its_own_nodes_record_and_no_other(cp, installed, tmp_path):
    api, (mine, other) = installed
    agent = as_agent_on(cp, api, mine, tmp_path / "k")

    wait_denied_another_record(agent, api, other, "the overlay's admission policy denying another node's record")
    assert apply_node_status(agent, mine)["metadata"]["name"] == mine


CONTROLLER = PREFIX + names.CONTROLLER_NAME
LEASE = ControllerSettings().lease_name


def as_controller_pod(cp, api: client.ApiClient, pod: str, path: Path) -> Path:
    """A kubeconfig of the controller's ServiceAccount, its token bound to Pod `pod` as the kubelet's is."""
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NAMESPACE, {"metadata": {"name": pod}, "spec": {
        "serviceAccountName": CONTROLLER, "containers": [{"name": "controller", "image": "leifur:dev"}]}})
    return service_account_kubeconfig(api, cp.server, cp.directory / "pki" / "ca.crt", NAMESPACE, CONTROLLER,
                                      path, bound_pod=pod)


def hold_lease(api: client.ApiClient, holder: str | None) -> None:
    """Write the controller's Lease as an elector would on taking it over (None: released)."""
    leases = client.CoordinationV1Api(api)
    spec = {"holderIdentity": holder, "leaseDurationSeconds": 15}
    try:
        leases.patch_namespaced_lease(LEASE, NAMESPACE, {"spec": spec})
    except ApiException as e:
        if e.status != 404:
            raise
        leases.create_namespaced_lease(NAMESPACE, {"metadata": {"name": LEASE}, "spec": spec})


def write(api: client.ApiClient, ns: str, name: str, value: str) -> str | None:
    """Patch the Service's annotation and its status as the controller does; the refusal's text, or None."""
    core = client.CoreV1Api(api)
    try:
        core.patch_namespaced_service(name, ns, {"metadata": {"annotations": {"leifur.io/test": value}}})
        core.patch_namespaced_service_status(name, ns, {"status": {"conditions": [{
            "type": "leifur.io/Test", "status": "True", "reason": "Test", "message": value,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    except ApiException as e:
        assert e.status in (403, 422), e
        return e.body or ""
    return None


def test_only_the_controller_holding_the_lease_writes_services(cp, installed, tmp_path):
    """The fence of a PATCH in flight: once the Lease moved, the old leader's writes are refused
    by the API server, whenever they arrive; the new leader's go through."""
    api, _ = installed
    paths = {pod: as_controller_pod(cp, api, pod, tmp_path / pod) for pod in ("ctl-a", "ctl-b")}
    a, b = (config.new_client_from_config(str(p)) for p in paths.values())
    core = client.CoreV1Api(api)
    ns = f"fence-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})

    hold_lease(api, "ctl-a")
    refusal = wait_for(lambda: write(b, ns, "web", "b"), 30, what="the fence refusing a controller not leading")
    assert "Pod ctl-b does not hold Lease" in refusal and "held by ctl-a" in refusal
    assert write(a, ns, "web", "a") is None

    hold_lease(api, "ctl-b")  # ctl-a lost it; anything it still sends must not land
    refusal = wait_for(lambda: write(a, ns, "web", "a-late"), 30, what="the fence refusing the old leader")
    assert "held by ctl-b" in refusal
    assert write(b, ns, "web", "b") is None
    annotations = core.read_namespaced_service("web", ns).metadata.annotations
    assert annotations["leifur.io/test"] == "b"

    hold_lease(api, None)
    refusal = wait_for(lambda: write(b, ns, "web", "b-late"), 30, what="the fence refusing all when released")
    assert "(released)" in refusal
    # People and other accounts are not the controller: not fenced.
    assert write(api, ns, "web", "admin") is None


def test_the_controller_does_its_job_behind_the_fence(cp, installed, tmp_path):
    """The real controller, as its Pod with the overlay's RBAC, takes the Lease and writes."""
    api, _ = installed
    client.CoordinationV1Api(api).delete_collection_namespaced_lease(NAMESPACE)
    kubeconfig = as_controller_pod(cp, api, "ctl-real", tmp_path / "ctl-real")
    ctl = ControllerProcess(kubeconfig, tmp_path / "controller.log", token=metrics_reader_token(api),
                            identity="ctl-real", lease_namespace=NAMESPACE)
    ctl.start().wait_ready()
    try:
        custom = client.CustomObjectsApi(api)
        custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, {
            "apiVersion": names.API_VERSION, "kind": "IPAddressPool", "metadata": {"name": "fenced"},
            "spec": {"addresses": ["203.0.113.200/29"]}})
        core = client.CoreV1Api(api)
        ns = f"fenced-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": ns}})
        core.create_namespaced_service(ns, {"metadata": {"name": "web"},
                                            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})

        def ip() -> str | None:
            svc = core.read_namespaced_service("web", ns)
            ingress = (svc.status.load_balancer and svc.status.load_balancer.ingress) or []
            return ingress[0].ip if ingress and names.SERVICE_FINALIZER in (svc.metadata.finalizers or []) else None

        assert wait_for(ip, 60, what="an IP written by the leader through the fence").startswith("203.0.113.20")
    finally:
        ctl.stop()


BGP_OVERLAY = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: lf-bgp
namePrefix: bgp-
resources:
  - ../deploy
components:
  - ../deploy/bgp
images:
  - {name: leifur, newName: registry.example.com/leifur, newTag: 9.9.9}
"""


def test_bgp_mode_applies_as_a_component_of_an_overlay(cp, tmp_path):
    """deploy/bgp added to an overlay of the base: the API server takes the agent's Pod with its FRR
    sidecar (a native sidecar), and the overlay's image and namespace reach both containers."""
    api = apply_overlay(cp, tmp_path, BGP_OVERLAY)
    ds = client.AppsV1Api(api).read_namespaced_daemon_set("bgp-leifur-agent", "lf-bgp")
    pod = ds.spec.template.spec
    (sidecar,) = pod.init_containers
    (agent,) = pod.containers
    assert sidecar.name == "frr" and sidecar.restart_policy == "Always"
    assert sidecar.image == agent.image == "registry.example.com/leifur:9.9.9"
    assert sidecar.command == ["leifur-frr"] and sidecar.args == ["/run/leifur-frr"]
    assert agent.args[-2:] == ["--bgp-frr-config=/run/leifur-frr/frr.conf", "--bgp-vty-dir=/run/leifur-frr"]
    # One in-memory volume, the same path in both; the agent in the vty group, with no more
    # capabilities than without BGP.
    frr = next(v for v in pod.volumes if v.name == "frr")
    assert frr.empty_dir.medium == "Memory"
    for container in (sidecar, agent):
        assert {(m.name, m.mount_path) for m in container.volume_mounts} >= {("frr", "/run/leifur-frr")}
    assert pod.security_context.supplemental_groups == [102]
    assert agent.security_context.capabilities.add == ["NET_RAW", "NET_ADMIN"]
    confined = sidecar.security_context
    assert confined.capabilities.drop == ["ALL"]
    assert confined.read_only_root_filesystem and not confined.allow_privilege_escalation
    # The rest of the base is there as without the component (the agent's RBAC, under the prefix).
    assert client.RbacAuthorizationV1Api(api).read_cluster_role("bgp-leifur-agent").rules
