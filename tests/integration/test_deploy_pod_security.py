"""The namespace's Pod Security labels are what let the agent in: the real API server (its built-in
PodSecurity admission) admits the agent's Pod, exactly as the kustomize base renders it, into a
namespace labelled as deploy/namespace.yaml is, and refuses it where the baseline or restricted
level is enforced. (The chart renders the same Namespace: test_helm_chart.py.)"""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur_dev.chart import DEPLOY, kustomize, objects

ENFORCE = "pod-security.kubernetes.io/enforce"


@pytest.fixture(scope="module")
def base() -> dict:
    return objects(kustomize(DEPLOY))


@pytest.fixture
def namespaces(core):
    """Make namespaces with the given labels; all deleted after the test."""
    made: list[str] = []

    def make(labels: dict[str, str]) -> str:
        name = f"psa-{uuid.uuid4().hex[:8]}"
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
        made.append(name)
        return name

    yield make
    for name in made:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name)


def _agent_pod(base: dict) -> dict:
    (daemonset,) = [o for k, o in base.items() if k[0] == "DaemonSet"]
    template = daemonset["spec"]["template"]
    return {"metadata": {"name": "agent", "labels": template["metadata"]["labels"]}, "spec": template["spec"]}


def test_the_namespace_says_privileged(base):
    (namespace,) = [o for k, o in base.items() if k[0] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels[ENFORCE] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "privileged"
    (daemonset,) = [o for k, o in base.items() if k[0] == "DaemonSet"]
    assert daemonset["spec"]["template"]["spec"]["priorityClassName"] == "system-node-critical"


def test_the_agent_is_admitted_under_the_namespaces_labels(base, core, namespaces):
    (namespace,) = [o for k, o in base.items() if k[0] == "Namespace"]
    ns = namespaces(namespace["metadata"]["labels"])
    pod = core.create_namespaced_pod(ns, _agent_pod(base))
    # Admitted as it is: host network, the two capabilities, the node-critical priority (which the
    # API server resolved from its built-in PriorityClass).
    assert pod.spec.host_network is True
    assert pod.spec.containers[0].security_context.capabilities.add == ["NET_RAW", "NET_ADMIN"]
    assert pod.spec.priority_class_name == "system-node-critical" and pod.spec.priority == 2000001000


@pytest.mark.parametrize("level, violations", [
    ("baseline", ["host namespaces (hostNetwork=true)", "hostPort", "non-default capabilities", "NET_ADMIN"]),
    ("restricted", ["host namespaces (hostNetwork=true)", "unrestricted capabilities", "runAsNonRoot != true",
                    "runAsUser=0"]),
], ids=["baseline", "restricted"])
def test_the_agent_is_refused_where_a_stricter_level_is_enforced(base, core, namespaces, level, violations):
    ns = namespaces({ENFORCE: level})
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(ns, _agent_pod(base))
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert f'violates PodSecurity "{level}:latest"' in message, message
    for words in violations:
        assert words in message, (words, message)
    assert not client.CoreV1Api(core.api_client).list_namespaced_pod(ns).items
