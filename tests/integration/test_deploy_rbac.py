"""deploy/ applies cleanly, and the controller does its whole job with exactly the RBAC
from deploy/, authenticated as its ServiceAccount by a real token — and no more."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur_dev import gobuild
from leifur_dev.cluster import REPO, service_account_kubeconfig, wait_for

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def deployed(control_plane, cluster):
    kubectl = str(gobuild.ensure_built("kubectl"))
    res = subprocess.run([kubectl, "--kubeconfig", str(control_plane.kubeconfig), "apply", "--server-side",
                          "-k", str(REPO / "deploy")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "serverside-applied" in res.stdout
    return res.stdout


def sa_kubeconfig(control_plane, api_client, path: Path) -> Path:
    return service_account_kubeconfig(api_client, control_plane.server, control_plane.directory / "pki" / "ca.crt",
                                      "leifur-system", "leifur-controller", path)


def test_deploy_applies_server_side(deployed):
    for obj in ("customresourcedefinition.apiextensions.k8s.io/ipaddresspools.leifur.io",
                "clusterrole.rbac.authorization.k8s.io/leifur-controller",
                "deployment.apps/leifur-controller", "daemonset.apps/leifur-agent",
                "customresourcedefinition.apiextensions.k8s.io/l2nodestatuses.leifur.io",
                "validatingadmissionpolicy.admissionregistration.k8s.io/leifur-agent-own-node"):
        assert obj in deployed


def test_controller_does_its_whole_job_as_its_service_account(deployed, env, control_plane, api_client):
    kubeconfig = sa_kubeconfig(control_plane, api_client, env.tmp / "sa.kubeconfig")
    env.controller(kubeconfig=kubeconfig, identity="rbac")
    pool = env.pool("rbac", ["203.0.113.240/29"])
    env.svc("web")
    ip = env.wait_ips("web")[0]
    env.wait_condition("web", "True", "Allocated")
    wait_for(lambda: env.cluster.has_event(env.ns, "web", "IPAllocated"), what="Event written as the SA")
    wait_for(lambda: (env.cluster.pool(pool).get("status") or {}).get("ipv4", {}).get("inUse") == 1,
             what="pool status written as the SA")
    assert names.POOL_FINALIZER in env.cluster.pool(pool)["metadata"]["finalizers"]
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease("leifur-controller", "leifur-system")
    assert lease.spec.holder_identity == "rbac"
    env.cluster.delete_service(env.ns, "web")
    wait_for(lambda: not env.cluster.service_exists(env.ns, "web"), what="finalizer removed as the SA")
    env.cluster.delete_pool(pool)
    wait_for(lambda: not env.cluster.pool_exists(pool), what="pool finalizer removed as the SA")
    assert ip.startswith("203.0.113.24")


def test_the_service_account_is_denied_what_it_does_not_need(deployed, control_plane, api_client, tmp_path):
    as_sa = config.new_client_from_config(str(sa_kubeconfig(control_plane, api_client, tmp_path / "k")))
    core, custom = client.CoreV1Api(as_sa), client.CustomObjectsApi(as_sa)
    leases = client.CoordinationV1Api(as_sa)
    attempts = {
        "read secrets": lambda: core.list_secret_for_all_namespaces(),
        "delete a Service": lambda: core.delete_namespaced_service("kubernetes", "default"),
        "create a Service": lambda: core.create_namespaced_service("default", {
            "metadata": {"name": "x"}, "spec": {"ports": [{"port": 1}]}}),
        "patch a Node": lambda: core.patch_node("n", {"metadata": {"labels": {"a": "b"}}}),
        "create a pool": lambda: custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, {
            "apiVersion": names.API_VERSION, "kind": "IPAddressPool", "metadata": {"name": "x"},
            "spec": {"addresses": ["192.0.2.0/32"]}}),
        "delete a pool": lambda: custom.delete_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, "x"),
        "touch another Lease": lambda: leases.read_namespaced_lease("someone-else", "leifur-system"),
        "Leases elsewhere": lambda: leases.read_namespaced_lease("leifur-controller", "default"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ApiException) as e:
            attempt()
        assert e.value.status == 403, what
