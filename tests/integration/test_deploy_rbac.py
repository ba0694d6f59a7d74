"""deploy/ applies cleanly, and the controller does its whole job with exactly the RBAC
from deploy/, authenticated as its ServiceAccount by a real token — and no more."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur_dev import gobuild
from leifur_dev.cluster import REPO, service_account_kubeconfig, wait_for

pytestmark = pytest.mark.controlplane

NAMESPACE = "leifur-system"


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


def delete_secret(api_client, name: str) -> None:
    core = client.CoreV1Api(api_client)
    with contextlib.suppress(ApiException):
        core.delete_namespaced_secret(name, NAMESPACE)

    def gone() -> bool:
        try:
            core.read_namespaced_secret(name, NAMESPACE)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, what=f"Secret {name} deleted")


def heartbeat_secret(api_client, name: str = names.HEARTBEAT_SECRET) -> dict:
    return client.CoreV1Api(api_client).read_namespaced_secret(name, NAMESPACE).to_dict()


def test_controller_does_its_whole_job_as_its_service_account(deployed, env, control_plane, api_client):
    # Other tests' controllers may have made the heartbeat key Secret already: this one must create it.
    delete_secret(api_client, names.HEARTBEAT_SECRET)
    kubeconfig = sa_kubeconfig(control_plane, api_client, env.tmp / "sa.kubeconfig")
    c = env.controller(kubeconfig=kubeconfig, identity="rbac")
    # Its metrics port asks the API server about each caller's token (TokenReview, SubjectAccessReview).
    assert c.get("/metrics")[0] == 200 and c.get("/metrics", token="")[0] == 401
    secret = wait_for(lambda: heartbeat_secret(api_client), what="heartbeat key Secret created as the SA")
    assert len(base64.b64decode(secret["data"][names.HEARTBEAT_KEY_CURRENT])) == names.HEARTBEAT_KEY_BYTES
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
    # BGP objects: read, and their conditions written.
    custom = client.CustomObjectsApi(api_client)
    peer = f"{env.ns}-rbac"
    custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.BGPPEERS, {
        "apiVersion": names.API_VERSION, "kind": names.BGP_PEER, "metadata": {"name": peer},
        "spec": {"peerAddress": "203.0.113.1", "myASN": 64512, "peerASN": 64500}})
    try:
        wait_for(lambda: (custom.get_cluster_custom_object(names.GROUP, names.VERSION, names.BGPPEERS, peer)
                          .get("status") or {}).get("conditions"), what="BGPPeer conditions written as the SA")
    finally:
        custom.delete_cluster_custom_object(names.GROUP, names.VERSION, names.BGPPEERS, peer)
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
        # It creates the heartbeat key Secret, and that is all: it never reads the key.
        "read the heartbeat key": lambda: core.read_namespaced_secret(names.HEARTBEAT_SECRET, NAMESPACE),
        "list Secrets in its namespace": lambda: core.list_namespaced_secret(NAMESPACE),
        "change the heartbeat key": lambda: core.patch_namespaced_secret(
            names.HEARTBEAT_SECRET, NAMESPACE, {"metadata": {"labels": {"a": "b"}}}),
        "delete the heartbeat key": lambda: core.delete_namespaced_secret(names.HEARTBEAT_SECRET, NAMESPACE),
        "create Secrets elsewhere": lambda: core.create_namespaced_secret("default", {
            "metadata": {"name": names.HEARTBEAT_SECRET}, "data": {}}),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ApiException) as e:
            attempt()
        assert e.value.status == 403, what


def test_without_its_secrets_permission_the_controller_works_and_retries_until_it_is_back(
        deployed, env, control_plane, api_client):
    # The manifest's RoleBinding that lets the controller create Secrets, found by what it grants.
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "controller" / "rbac.yaml").read_text()) if d]
    (role,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Role"
               and any("secrets" in r["resources"] for r in d["rules"])]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == role]
    rbac = client.RbacAuthorizationV1Api(api_client)
    name = f"hb-{uuid.uuid4().hex[:8]}"
    rbac.delete_namespaced_role_binding(binding["metadata"]["name"], NAMESPACE)
    try:
        kubeconfig = sa_kubeconfig(control_plane, api_client, env.tmp / "sa.kubeconfig")
        as_sa = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))

        def denied() -> bool:
            try:
                as_sa.create_namespaced_secret(NAMESPACE, {"metadata": {"name": name}}, dry_run="All")
            except ApiException as e:
                return e.status == 403
            return False

        wait_for(denied, what="the API server's authorizer seeing the RoleBinding gone")
        c = env.controller("--heartbeat-secret", name, kubeconfig=kubeconfig, identity="rbac-nosecret")
        wait_for(lambda: c.log_path.read_text().count(f"Secret {NAMESPACE}/{name}: could not create it (HTTP 403")
                 >= 2, what="the denied create logged and retried")
        # Its normal work goes on meanwhile.
        env.pool("rbac-nosecret", ["203.0.113.236/30"])
        env.svc("web")
        env.wait_ips("web")
        with pytest.raises(ApiException) as e:
            heartbeat_secret(api_client, name)
        assert e.value.status == 404
    finally:
        rbac.create_namespaced_role_binding(NAMESPACE, binding)
    try:
        # Retries back off to at most 30 s (plus jitter) apart.
        secret = wait_for(lambda: heartbeat_secret(api_client, name), 90, interval=0.5,
                          what="the Secret created once the permission is back")
        assert secret["data"].keys() == {names.HEARTBEAT_KEY_CURRENT}
    finally:
        delete_secret(api_client, name)
