"""The agent's identity from deploy/: a ServiceAccount whose Pod-bound token may write the
L2NodeStatus of its own node and nothing of any other node, and is denied what it does not need.
(That the agent does its whole job with exactly this RBAC is shown by every test in
tests/netns/test_agent.py: the Stack runs each agent with such a token.)"""

from __future__ import annotations

import subprocess
import uuid

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from leifur.kube.metrics_auth import ALLOWED, FORBIDDEN, UNAUTHENTICATED, review
from leifur.model import names
from leifur_dev import gobuild
from leifur_dev.cluster import (
    REPO,
    apply_node_status,
    metrics_reader_token,
    service_account_kubeconfig,
    wait_denied_another_record,
)

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def agent_identity(control_plane, api_client, cluster):
    kubectl = str(gobuild.ensure_built("kubectl"))
    res = subprocess.run([kubectl, "--kubeconfig", str(control_plane.kubeconfig), "apply", "--server-side",
                          "-k", str(REPO / "deploy")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    core = client.CoreV1Api(api_client)
    suffix = uuid.uuid4().hex[:6]
    nodes = [f"rbac-{suffix}-a", f"rbac-{suffix}-b"]
    for n in nodes:
        core.create_node({"metadata": {"name": n}})
        core.create_namespaced_pod("leifur-system", {
            "metadata": {"name": f"agent-{n}"},
            "spec": {"nodeName": n, "serviceAccountName": names.AGENT_NAME,
                     "containers": [{"name": "agent", "image": "leifur:dev"}]}})
    yield nodes
    for n in nodes:
        core.delete_namespaced_pod(f"agent-{n}", "leifur-system", grace_period_seconds=0)
        core.delete_node(n)


def as_agent_on(control_plane, api_client, node: str, path) -> client.ApiClient:
    kubeconfig = service_account_kubeconfig(api_client, control_plane.server, control_plane.directory / "pki" /
                                            "ca.crt", "leifur-system", names.AGENT_NAME, path,
                                            bound_pod=f"agent-{node}")
    return config.new_client_from_config(str(kubeconfig))


def test_an_agent_writes_its_own_nodes_record_and_no_other(agent_identity, control_plane, api_client, tmp_path):
    mine, other = agent_identity
    api = as_agent_on(control_plane, api_client, mine, tmp_path / "k")
    wait_denied_another_record(api, api_client, other, "the admission policy denying another node's record")
    written = apply_node_status(api, mine)
    assert written["metadata"]["name"] == mine
    # An unbound token of the same ServiceAccount names no node: it writes nothing.
    unbound = config.new_client_from_config(str(service_account_kubeconfig(
        api_client, control_plane.server, control_plane.directory / "pki" / "ca.crt", "leifur-system",
        names.AGENT_NAME, tmp_path / "unbound")))
    with pytest.raises(ApiException) as e:
        apply_node_status(unbound, mine)
    assert "names no node" in e.value.body
    client.CustomObjectsApi(api_client).delete_cluster_custom_object(
        names.GROUP, names.VERSION, names.L2NODESTATUSES, mine)


def test_the_agent_is_denied_what_it_does_not_need(agent_identity, control_plane, api_client, tmp_path):
    api = as_agent_on(control_plane, api_client, agent_identity[0], tmp_path / "k")
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    attempts = {
        "read secrets": lambda: core.list_secret_for_all_namespaces(),
        "patch a Service": lambda: core.patch_namespaced_service("kubernetes", "default", {"metadata": {}}),
        "write Service status": lambda: core.patch_namespaced_service_status("kubernetes", "default", {}),
        "label a Node": lambda: core.patch_node(agent_identity[0], {"metadata": {"labels": {"a": "b"}}}),
        "delete a Node": lambda: core.delete_node(agent_identity[1]),
        "edit a pool": lambda: custom.patch_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, "x", {}),
        "edit an advertisement": lambda: custom.delete_cluster_custom_object(
            names.GROUP, names.VERSION, names.L2ADVERTISEMENTS, "x"),
        "read pods": lambda: core.list_namespaced_pod("leifur-system"),
        "read secrets outside its namespace": lambda: core.list_namespaced_secret("default"),
        "edit a BGPPeer": lambda: custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.BGPPEERS, {
            "apiVersion": names.API_VERSION, "kind": names.BGP_PEER, "metadata": {"name": "x"},
            "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1"}}),
        "edit a BFDProfile": lambda: custom.delete_cluster_custom_object(
            names.GROUP, names.VERSION, names.BFDPROFILES, "x"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ApiException) as e:
            attempt()
        assert e.value.status == 403, f"{what}: {e.value.status}"


def test_the_agent_may_ask_who_reads_its_metrics(agent_identity, control_plane, api_client, tmp_path):
    # What its metrics port asks the API server for each caller, asked with the agent's own token.
    # (tests/netns scrape agents that run as this identity.)
    api = as_agent_on(control_plane, api_client, agent_identity[0], tmp_path / "k")
    assert review(api, metrics_reader_token(api_client), "/metrics", 5, 0).status == ALLOWED
    assert review(api, "made.up.token", "/metrics", 5, 0).status == UNAUTHENTICATED
    # Its own token is no reader's: the agent's identity is not bound to leifur-metrics-reader.
    own = yaml.safe_load((tmp_path / "k").read_text())["users"][0]["user"]["token"]
    assert review(api, own, "/metrics", 5, 0).status == FORBIDDEN


def test_the_agent_reads_bgp_objects_and_the_password_secrets_of_its_namespace(agent_identity, control_plane,
                                                                                api_client, tmp_path):
    core = client.CoreV1Api(api_client)
    secret = f"bgp-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_secret("leifur-system", {
        "metadata": {"name": secret}, "type": "kubernetes.io/basic-auth", "stringData": {"password": "s3cret"}})
    try:
        api = as_agent_on(control_plane, api_client, agent_identity[0], tmp_path / "k")
        custom, agent_core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        # What its informers list (and then watch).
        for plural in (names.BGPPEERS, names.BGPADVERTISEMENTS, names.BFDPROFILES):
            assert custom.list_cluster_custom_object(names.GROUP, names.VERSION, plural)["items"] is not None
        got = agent_core.read_namespaced_secret(secret, "leifur-system")
        assert got.type == "kubernetes.io/basic-auth" and "password" in got.data
        listed = agent_core.list_namespaced_secret("leifur-system", field_selector="type=kubernetes.io/basic-auth")
        assert secret in {s.metadata.name for s in listed.items}
    finally:
        core.delete_namespaced_secret(secret, "leifur-system")
