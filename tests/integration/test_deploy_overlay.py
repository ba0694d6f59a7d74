"""deploy/ installed through an overlay in another namespace and with a name prefix (the usual way to
install elsewhere): the admission policy still keeps each agent to its own node's record."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from leifur.model import names
from leifur_dev import controlplane, gobuild
from leifur_dev.cluster import REPO, apply_node_status, service_account_kubeconfig, wait_denied_another_record

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


@pytest.fixture(scope="module")
def installed(cp, tmp_path_factory) -> Iterator[tuple[client.ApiClient, list[str]]]:
    work = tmp_path_factory.mktemp("overlay")
    shutil.copytree(REPO / "deploy", work / "deploy")
    (work / "overlay").mkdir()
    (work / "overlay" / "kustomization.yaml").write_text(OVERLAY)
    kubectl = str(gobuild.ensure_built("kubectl"))
    res = subprocess.run([kubectl, "--kubeconfig", str(cp.kubeconfig), "apply", "--server-side",
                          "-k", str(work / "overlay")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    api = config.new_client_from_config(str(cp.kubeconfig))
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
