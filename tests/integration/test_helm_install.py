"""The chart installed by the real helm into the real API server, in a namespace of its own choosing
(not leifur-system): the controller and the agents do their whole job with exactly the chart's
RBAC, authenticated as its ServiceAccounts by real tokens, the admission policy keeps each agent to
its own node's record, and `helm uninstall` leaves only what docs/operations/helm.md says it does.
(What the kustomize base's tests show: test_deploy_rbac.py, test_deploy_agent_rbac.py,
test_deploy_overlay.py.)"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur_dev import controlplane, gobuild, netlab
from leifur_dev.chart import CHART, DEPLOY, OTHER_VALUES, helm, objects, template
from leifur_dev.cluster import (
    Cluster,
    ControllerProcess,
    apply_node_status,
    metrics_reader_token,
    service_account_kubeconfig,
    wait_crd_established,
    wait_denied_another_record,
    wait_for,
)
from leifur_dev.stack import Stack

pytestmark = pytest.mark.controlplane

RELEASE, NAMESPACE = "leifur", "lf-helm"


class Installed:
    def __init__(self, cp: controlplane.ControlPlane, manifest: dict) -> None:
        self.cp = cp
        self.api = config.new_client_from_config(str(cp.kubeconfig))
        self.cluster = Cluster(self.api)
        self.core = client.CoreV1Api(self.api)
        # The release's objects, as helm recorded them (without the CRDs: helm keeps those apart).
        self.manifest = manifest
        self.controller: ControllerProcess | None = None

    def helm(self, *args: str) -> str:
        return helm(*args, "--namespace", NAMESPACE, kubeconfig=self.cp.kubeconfig)

    def kubeconfig_of(self, account: str, path: Path, bound_pod: str | None = None,
                      server: str | None = None) -> Path:
        return service_account_kubeconfig(self.api, server or self.cp.server, self.cp.directory / "pki" / "ca.crt",
                                          NAMESPACE, account, path, bound_pod=bound_pod)

    def controller_pod(self, name: str) -> str:
        """A Pod of the controller's Deployment (no kubelet runs it): a token bound to it names it,
        as the leader fence checks."""
        self.core.create_namespaced_pod(NAMESPACE, {"metadata": {"name": name}, "spec": {
            "serviceAccountName": "leifur-controller", "containers": [{"name": "controller", "image": "leifur:dev"}]}})
        return name

    def as_account(self, account: str, path: Path, bound_pod: str | None = None) -> client.ApiClient:
        return config.new_client_from_config(str(self.kubeconfig_of(account, path, bound_pod)))

    def agent_pod_on(self, node: str) -> str:
        """A Node and a Pod of the agent's DaemonSet on it (there is no kubelet: the Pod stays
        Pending, but a token bound to it names its node, as a DaemonSet Pod's does)."""
        with contextlib.suppress(ApiException):
            self.core.create_node({"metadata": {"name": node}})
        pod = f"agent-{node}"
        self.core.create_namespaced_pod(NAMESPACE, {
            "metadata": {"name": pod},
            "spec": {"nodeName": node, "serviceAccountName": names.AGENT_NAME,
                     "containers": [{"name": "agent", "image": "leifur:dev"}]}})
        return pod

    def remove_agent_pod(self, node: str) -> None:
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(f"agent-{node}", NAMESPACE, grace_period_seconds=0)
        with contextlib.suppress(ApiException):
            self.core.delete_node(node)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Iterator[Installed]:
    # A control plane of its own: the session's has deploy/ applied, whose cluster-wide objects
    # (same names) helm would rightly refuse to take over.
    cp = controlplane.start()
    inst: Installed | None = None
    try:
        out = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                   kubeconfig=cp.kubeconfig)
        assert "STATUS: deployed" in out, out
        # The notes say where it went and what comes next.
        assert f"installed in the namespace {NAMESPACE}" in out and "IPAddressPool" in out, out
        inst = Installed(cp, objects(helm("get", "manifest", RELEASE, "--namespace", NAMESPACE,
                                          kubeconfig=cp.kubeconfig)))
        yield inst
    finally:
        if inst is not None and inst.controller is not None:
            inst.controller.stop()
        cp.stop()


@pytest.fixture(scope="module")
def controller(installed, tmp_path_factory) -> ControllerProcess:
    """The real controller, as the chart's ServiceAccount, in the chart's namespace (the Lease's and
    the heartbeat key Secret's, as POD_NAMESPACE gives it in the Deployment); runs until uninstall."""
    work = tmp_path_factory.mktemp("helm-controller")
    # Its token bound to a Pod named as its identity (POD_NAME in the Deployment): behind the
    # chart's leader fence, as in a cluster.
    pod = installed.controller_pod("helm")
    c = ControllerProcess(installed.kubeconfig_of("leifur-controller", work / "sa.kubeconfig", bound_pod=pod),
                          work / "controller.log", token=metrics_reader_token(installed.api), identity="helm",
                          lease_namespace=NAMESPACE)
    installed.controller = c
    c.start().wait_ready()
    return c


def kubectl(installed: Installed, *args: str, stdin: str | None = None) -> str:
    exe = str(gobuild.ensure_built("kubectl"))
    res = subprocess.run([exe, "--kubeconfig", str(installed.cp.kubeconfig), *args], input=stdin,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
    return res.stdout


def test_helm_install_creates_the_charts_objects_and_crds(installed):
    kinds = {k[0] for k in installed.manifest}
    assert {"Deployment", "DaemonSet", "ValidatingAdmissionPolicy", "ClusterRole", "Role"} <= kinds
    live = yaml.safe_load(kubectl(installed, "get", "-o", "yaml", "-f", "-",
                                  stdin=yaml.safe_dump_all(installed.manifest.values())))["items"]
    assert len(live) == len(installed.manifest)
    for obj in live:
        labels = obj["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", obj["metadata"]["name"]
        assert obj["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    for path in sorted((DEPLOY / "crds").glob("*.yaml")):
        wait_crd_established(installed.api, yaml.safe_load(path.read_text())["metadata"]["name"])
    assert f"{RELEASE}\t{NAMESPACE}" in installed.helm("list")


def test_the_controller_does_its_whole_job_as_the_charts_service_account(installed, controller):
    c, cluster = controller, installed.cluster
    # Its metrics port asks the API server about each caller's token, with the chart's RBAC.
    assert c.get("/metrics")[0] == 200 and c.get("/metrics", token="")[0] == 401
    secret = wait_for(lambda: installed.core.read_namespaced_secret(names.HEARTBEAT_SECRET, NAMESPACE),
                      what="the heartbeat key Secret, created by the controller in the chart's namespace")
    assert len(base64.b64decode(secret.data[names.HEARTBEAT_KEY_CURRENT])) == names.HEARTBEAT_KEY_BYTES
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.ensure_namespace(ns)
    pool = f"helm-{ns}"
    cluster.create_pool(pool, ["203.0.113.240/29"])
    cluster.create_service(ns, "web")
    ip = wait_for(lambda: cluster.ips(ns, "web"), what="an IP for the Service")[0]
    assert ip.startswith("203.0.113.24")
    wait_for(lambda: (cluster.service_condition(ns, "web") or {}).get("reason") == "Allocated",
             what="the Service's condition written")
    wait_for(lambda: cluster.has_event(ns, "web", "IPAllocated"), what="an Event written")
    wait_for(lambda: (cluster.pool(pool).get("status") or {}).get("ipv4", {}).get("inUse") == 1,
             what="the pool's status written")
    assert names.POOL_FINALIZER in cluster.pool(pool)["metadata"]["finalizers"]
    lease = client.CoordinationV1Api(installed.api).read_namespaced_lease("leifur-controller", NAMESPACE)
    assert lease.spec.holder_identity == "helm"
    cluster.delete_service(ns, "web")
    wait_for(lambda: not cluster.service_exists(ns, "web"), what="the Service's finalizer removed")
    cluster.delete_pool(pool)
    wait_for(lambda: not cluster.pool_exists(pool), what="the pool's finalizer removed")
    installed.core.delete_namespace(ns)


def test_the_charts_service_accounts_are_denied_what_they_do_not_need(installed, tmp_path):
    node = f"helm-deny-{uuid.uuid4().hex[:6]}"
    pod = installed.agent_pod_on(node)
    try:
        controller = installed.as_account("leifur-controller", tmp_path / "c")
        agent = installed.as_account(names.AGENT_NAME, tmp_path / "a", bound_pod=pod)
        c_core, a_core = client.CoreV1Api(controller), client.CoreV1Api(agent)
        attempts = {
            "controller: read Secrets": lambda: c_core.list_secret_for_all_namespaces(),
            "controller: read the heartbeat key": lambda: c_core.read_namespaced_secret(names.HEARTBEAT_SECRET,
                                                                                         NAMESPACE),
            "controller: create Secrets elsewhere": lambda: c_core.create_namespaced_secret(
                "default", {"metadata": {"name": "x"}}),
            "controller: create a Service": lambda: c_core.create_namespaced_service("default", {
                "metadata": {"name": "x"}, "spec": {"ports": [{"port": 1}]}}),
            "controller: another Lease": lambda: client.CoordinationV1Api(controller).read_namespaced_lease(
                "someone-else", NAMESPACE),
            "agent: read Secrets": lambda: a_core.list_secret_for_all_namespaces(),
            "agent: patch a Service": lambda: a_core.patch_namespaced_service("kubernetes", "default",
                                                                              {"metadata": {}}),
            "agent: label a Node": lambda: a_core.patch_node(node, {"metadata": {"labels": {"a": "b"}}}),
            "agent: edit a pool": lambda: client.CustomObjectsApi(agent).patch_cluster_custom_object(
                names.GROUP, names.VERSION, names.POOLS, "x", {}),
        }
        for what, attempt in attempts.items():
            with pytest.raises(ApiException) as e:
                attempt()
            assert e.value.status == 403, f"{what}: {e.value.status}"
    finally:
        installed.remove_agent_pod(node)


def test_the_charts_leader_fence_refuses_a_controller_that_does_not_hold_the_lease(installed, controller,
                                                                                  tmp_path):
    # The running controller ("helm") holds the Lease in the chart's namespace; a standby replica's
    # write is refused by the API server, whenever it arrives.
    wait_for(lambda: client.CoordinationV1Api(installed.api).read_namespaced_lease(
        "leifur-controller", NAMESPACE).spec.holder_identity == "helm", what="the controller leading")
    standby = client.CoreV1Api(installed.as_account("leifur-controller", tmp_path / "k",
                                                    bound_pod=installed.controller_pod("helm-standby")))
    ns = f"t-{uuid.uuid4().hex[:8]}"
    installed.cluster.ensure_namespace(ns)
    installed.core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})

    def refusal() -> str | None:
        try:
            standby.patch_namespaced_service("web", ns, {"metadata": {"annotations": {"leifur.io/test": "late"}}})
        except ApiException as e:
            assert e.status in (403, 422), e
            return e.body or ""
        return None

    text = wait_for(refusal, 30, what="the chart's fence refusing a controller that does not lead")
    assert f"Pod helm-standby does not hold Lease {NAMESPACE}/leifur-controller (held by helm)" in text
    installed.core.delete_namespaced_pod("helm-standby", NAMESPACE, grace_period_seconds=0)
    installed.core.delete_namespaced_service("web", ns)
    installed.core.delete_namespace(ns)


def test_the_charts_admission_policy_keeps_an_agent_to_its_own_nodes_record(installed, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    mine, other = f"helm-{suffix}-a", f"helm-{suffix}-b"
    pods = {n: installed.agent_pod_on(n) for n in (mine, other)}
    try:
        agent = installed.as_account(names.AGENT_NAME, tmp_path / "k", bound_pod=pods[mine])
        wait_denied_another_record(agent, installed.api, other, "the chart's policy denying another node's record")
        assert apply_node_status(agent, mine)["metadata"]["name"] == mine
        unbound = installed.as_account(names.AGENT_NAME, tmp_path / "unbound")
        with pytest.raises(ApiException) as e:
            apply_node_status(unbound, mine)
        assert "names no node" in e.value.body
    finally:
        for n in (mine, other):
            with contextlib.suppress(ApiException):
                installed.cluster.custom.delete_cluster_custom_object(names.GROUP, names.VERSION,
                                                                      names.L2NODESTATUSES, n)
            installed.remove_agent_pod(n)


def test_the_api_server_accepts_the_chart_at_other_values(installed, tmp_path):
    # Every value changed (test_helm_chart.py checks that each reaches its object): the API server
    # validates what that renders, as a server-side dry run over the installed release.
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({**OTHER_VALUES, "namespace": {"name": NAMESPACE}}))
    rendered = objects(template("--values", str(values), "--set", "metrics.serviceMonitor.enabled=true",
                                "--set", "metrics.reader.enabled=true",
                                "--set", "metrics.grafanaDashboard.enabled=true",
                                release=RELEASE, namespace=NAMESPACE, crds=False))
    # (The ServiceMonitor needs the Prometheus Operator's CRDs, which this cluster does not have.)
    plain = [o for k, o in rendered.items() if k[0] != "ServiceMonitor"]
    # As helm's own field manager (helm 4 installs by server-side apply): the changed ports replace
    # the installed ones rather than join them.
    deployment = client.AppsV1Api(installed.api).read_namespaced_deployment("leifur-controller", NAMESPACE)
    (manager,) = {m.manager for m in deployment.metadata.managed_fields if m.operation == "Apply"}
    out = kubectl(installed, "apply", "--server-side", f"--field-manager={manager}", "--force-conflicts",
                  "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(plain))
    assert out.count("(server dry run)") == len(plain), out


@pytest.mark.netns
def test_the_charts_agents_announce_a_service_ip_on_the_lan(installed, controller, tmp_path):
    """Two node namespaces, each running the real agent with the DaemonSet's flags and a token of
    the chart's ServiceAccount bound to a Pod on its node, and the key from the Secret the
    controller made: the Service's IP is answered by one node, serves a connection, and each
    agent writes its node's record."""
    (daemonset,) = [o for k, o in installed.manifest.items() if k[0] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    secret = installed.core.read_namespaced_secret(names.HEARTBEAT_SECRET, NAMESPACE)
    with netlab.Lab(2) as lab:
        stack = Stack(installed.cp, installed.api, lab, tmp_path, agent_args=tuple(container["args"]),
                      namespace=NAMESPACE, agent_rbac=None)
        stack.heartbeat_keys = {k: base64.b64decode(v) for k, v in secret.data.items()}
        try:
            pool = stack.pool("lan", [f"{stack.lan_ip(40)}-{stack.lan_ip(45)}"])
            stack.advertisement("lan", ipAddressPools=[pool], interfaces=["eth0"], mode="Responder")
            stack.start(controller=False)
            ns = stack.namespace("apps")
            ip = stack.service(ns, "web")
            stack.serve(ip)
            macs = wait_for(lambda: m if len(m := stack.who_answers(ip)) == 1 else None, 30, interval=0.2,
                            what=f"exactly one node answering for {ip}")
            answering = stack.mac_owner(macs[0])
            assert wait_for(lambda: stack.connect(ip), 15, what="a TCP answer") == answering
            for host in lab.nodes:
                node = stack.node_name(host)
                count = 1 if host.name == answering else 0

                def record(node=node, count=count) -> bool:
                    return stack.cluster.custom.get_cluster_custom_object(
                        names.GROUP, names.VERSION, names.L2NODESTATUSES, node)["status"]["count"] == count

                wait_for(record, 15, what=f"{node}'s record, written by its agent, with {count} IP(s)")
                # Its peer is heard: the heartbeats are signed with the controller's key.
                agent = stack.agents[host.name]
                wait_for(lambda agent=agent: agent.metric("leifur_agent_peers", state="ready") == 1, 15,
                         what=f"{node} hearing its peer")
            wait_for(lambda: stack.cluster.has_event(ns, "web", names.REASON_NODE_ASSIGNED), 15,
                     what="the agent's NodeAssigned Event")
        finally:
            stack.stop()
            for a in stack.agents.values():
                print(f"--- {a.node_name} ---\n{a.log_tail(30)}")


def test_helm_uninstall_leaves_only_the_crds_the_key_the_lease_and_the_namespace(installed, controller):
    controller.stop()
    assert f'release "{RELEASE}" uninstalled' in installed.helm("uninstall", RELEASE)
    # Every object of the release is gone...
    left = kubectl(installed, "get", "--ignore-not-found", "-o", "name", "-f", "-",
                   stdin=yaml.safe_dump_all(installed.manifest.values()))
    assert left.strip() == ""
    # (helm's own record of the release, a Secret, is gone too: see the Secrets below.)
    assert RELEASE not in installed.helm("list")
    # ...and what helm never owned stays, as docs/operations/helm.md says: the CRDs (helm never
    # deletes those of crds/), so every pool, advertisement and node record; the heartbeat key
    # and the Lease, which the controller made; the namespace, which --create-namespace made.
    for path in sorted((DEPLOY / "crds").glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        client.ApiextensionsV1Api(installed.api).read_custom_resource_definition(name)
    installed.core.read_namespace(NAMESPACE)
    remaining = {
        "Secret": [s.metadata.name for s in installed.core.list_namespaced_secret(NAMESPACE).items],
        "Lease": [x.metadata.name for x in client.CoordinationV1Api(installed.api).list_namespaced_lease(
            NAMESPACE).items],
        "ServiceAccount": [x.metadata.name for x in installed.core.list_namespaced_service_account(NAMESPACE).items],
        "ConfigMap": [x.metadata.name for x in installed.core.list_namespaced_config_map(NAMESPACE).items],
        "Service": [x.metadata.name for x in installed.core.list_namespaced_service(NAMESPACE).items],
    }
    assert remaining == {"Secret": [names.HEARTBEAT_SECRET], "Lease": ["leifur-controller"], "ServiceAccount": [],
                         "ConfigMap": [], "Service": []}
