"""`leifurctl status` and `explain`, run as a program against the real API server with the real controller.

What the agents write (their L2NodeStatus records), and the Nodes and EndpointSlices a kubelet
and the EndpointSlice controller would write, are created here as plain API objects: that is the
data the CLI reads, with the same shape the agents write (agent/records.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

import leifur
from leifur.model import names
from leifur_dev import gobuild
from leifur_dev.cluster import wait_for

pytestmark = pytest.mark.controlplane


def leifurctl(control_plane, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", *args,
                           "--kubeconfig", str(control_plane.kubeconfig)],
                          capture_output=True, text=True, timeout=120)


def lists_problems(report: dict) -> bool:
    """What status's exit code says, read from its own output: a row not OK, or a warning."""
    return (any(row["state"] != "OK" for row in (*report["pools"], *report["services"]))
            or bool(report["strayAnnouncements"] or report["conflicts"]))


def ctl_json(control_plane, *args: str) -> dict:
    res = leifurctl(control_plane, *args, "-o", "json")
    report = json.loads(res.stdout) if res.stdout else None
    # status: 3 exactly when it lists problems; everything else: 0.
    expected = 3 if args[0] == "status" and report and lists_problems(report) else 0
    assert res.returncode == expected, res.stderr
    assert report is not None
    return report


def explain(env, control_plane, name: str) -> dict:
    return ctl_json(control_plane, "explain", f"{env.ns}/{name}")


def field(text: str, key: str) -> str:
    """The value of a "Key:   value" line of explain's readable output."""
    return next(line for line in text.splitlines() if line.startswith(f"{key}:")).partition(":")[2].strip()


def by_service(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["services"]}


class World:
    """Cluster-scoped objects a test creates besides pools (advertisements, Nodes, agents' records),
    removed afterwards so that later tests see none of them."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.undo: list = []

    def advertisement(self, name: str, pools: list[str], node_labels: dict[str, str]) -> None:
        self.custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.L2ADVERTISEMENTS, {
            "apiVersion": names.API_VERSION, "kind": "L2Advertisement", "metadata": {"name": name},
            "spec": {"ipAddressPools": pools, "nodeSelectors": [{"matchLabels": node_labels}]}})
        self.undo.append(lambda: self.custom.delete_cluster_custom_object(
            names.GROUP, names.VERSION, names.L2ADVERTISEMENTS, name))

    def node(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.core.create_node({"metadata": {"name": name, "labels": labels or {}}})
        self.undo.append(lambda: self.core.delete_node(name))

    def ready_endpoint(self, namespace: str, service: str, node: str) -> None:
        name = f"{service}-slice"
        self.discovery.create_namespaced_endpoint_slice(namespace, {
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": True}, "nodeName": node}]})
        self.undo.append(lambda: self.discovery.delete_namespaced_endpoint_slice(name, namespace))

    def agent_record(self, node: str, ip: str, services: list[str], pool: str) -> None:
        """The L2NodeStatus the agent on `node` writes when it announces `ip`."""
        self.custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES, {
            "apiVersion": names.API_VERSION, "kind": "L2NodeStatus", "metadata": {"name": node},
            "status": {"count": 1, "ips": ip, "announcements": [{
                "ip": ip, "services": services, "pool": pool, "interfaces": ["eth0"], "mode": "Responder",
                "since": "2025-01-01T00:00:00Z"}]}})
        self.undo.append(lambda: self.custom.delete_cluster_custom_object(
            names.GROUP, names.VERSION, names.L2NODESTATUSES, node))

    def cleanup(self) -> None:
        for undo in reversed(self.undo):
            with contextlib.suppress(ApiException):
                undo()


@pytest.fixture
def world(api_client):
    w = World(api_client)
    yield w
    w.cleanup()


def test_status_and_explain_say_why_services_have_no_ip(env, control_plane, world):
    roomy = env.pool("roomy", ["192.0.2.64/27"], autoAssign=False)
    small = env.pool("small", ["203.0.113.10-203.0.113.11"])
    env.controller()
    in_small = {names.ANN_ADDRESS_POOL: small}
    env.svc("first", annotations={**in_small, names.ANN_LOAD_BALANCER_IPS: "203.0.113.10"})
    assert env.wait_ips("first") == ["203.0.113.10"]
    env.svc("second", annotations=in_small)
    assert env.wait_ips("second") == ["203.0.113.11"]
    env.svc("thief", annotations={names.ANN_LOAD_BALANCER_IPS: "203.0.113.10"})
    env.svc("late", annotations=in_small)
    env.svc("lost", annotations={names.ANN_ADDRESS_POOL: f"{env.ns}-smal"})
    env.svc("internal", type="ClusterIP")
    env.wait_condition("thief", "False", "Taken")
    env.wait_condition("late", "False", "Exhausted")
    env.wait_condition("lost", "False", "NoPool")
    # first's IP is announced by a node's agent, as its record says; second's pool has no advertisement.
    node = f"{env.ns}-n1"
    world.node(node)
    world.agent_record(node, "203.0.113.10", [f"{env.ns}/first"], small)

    report = ctl_json(control_plane, "status", "-n", env.ns)
    pools = {p["name"]: p for p in report["pools"]}
    assert pools[small]["families"] == {"IPv4": {"total": 2, "inUse": 2, "available": 0}}
    assert pools[small]["state"] == "Exhausted"
    assert pools[roomy]["families"] == {"IPv4": {"total": 32, "inUse": 0, "available": 32}}
    assert pools[roomy]["state"] == "OK" and pools[roomy]["autoAssign"] is False
    names_in_order = [p["name"] for p in report["pools"]]
    assert names_in_order.index(small) < names_in_order.index(roomy)  # problems first, though "roomy" < "small"

    # Services without an IP first, then those with an IP and a problem, then the fine ones.
    assert [s["name"] for s in report["services"]] == ["late", "lost", "thief", "second", "first"]
    svcs = by_service(report)
    assert {n: s["state"] for n, s in svcs.items()} == {
        "late": "Exhausted", "lost": "NoPool", "thief": "Taken", "second": "NoAdvertisement", "first": "OK"}
    assert svcs["first"]["ips"] == ["203.0.113.10"] and svcs["first"]["pools"] == [small]
    assert svcs["first"]["announcements"] == [{"ip": "203.0.113.10", "nodes": [node], "state": "Announced",
                                               "message": f"announced by {node} on eth0 (Responder) since "
                                                          "2025-01-01T00:00:00Z"}]
    assert svcs["thief"]["ips"] == [] and "203.0.113.10 is held by" in svcs["thief"]["problems"][0]["message"]
    assert node in report["agentsSeen"]

    # The table: the same order, one row per pool and per Service.
    table = leifurctl(control_plane, "status", "-n", env.ns)
    assert table.returncode == 3, table.stderr  # it lists problems
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["POOL", "ADDRESSES", "IPV4", "USED/TOTAL", "IPV6", "USED/TOTAL", "AUTO", "STATE",
                                "MESSAGE"]
    small_row = next(line for line in lines if line.startswith(small))
    assert small_row.split()[1:5] == ["203.0.113.10-203.0.113.11", "2/2", "-", "yes"]
    assert "Exhausted   all 2 IPv4 addresses are in use" in small_row
    header = lines.index(next(line for line in lines if line.startswith("SERVICE")))
    rows = lines[header + 1: header + 6]
    assert [r.split()[0] for r in rows] == [f"{env.ns}/{n}" for n in ("late", "lost", "thief", "second", "first")]
    assert rows[4].split()[1:5] == ["203.0.113.10", small, node, "OK"]
    assert rows[2].split()[1:5] == ["<pending>", "-", "-", "Taken"]

    # explain: the controller's reason, the same decision made now, and what leifurctl adds.
    thief = explain(env, control_plane, "thief")
    assert thief["verdict"]["reason"] == "Taken" and not thief["verdict"]["ok"]
    assert f"203.0.113.10 is held by {env.ns}/first" in thief["verdict"]["message"]
    assert thief["allocation"]["controller"]["reason"] == thief["allocation"]["now"]["reason"] == "Taken"
    assert thief["request"]["requestedIPs"] == ["203.0.113.10"]
    assert any(e["reason"] == "AllocationFailed" for e in thief["events"])

    late = explain(env, control_plane, "late")
    assert late["verdict"]["reason"] == "Exhausted"
    assert f"{small} (2/2 in use)" in late["verdict"]["message"]
    assert late["allocation"]["candidatePools"] == [small]

    lost = explain(env, control_plane, "lost")
    assert lost["verdict"]["reason"] == "NoPool"
    assert lost["allocation"]["hints"] == [
        f"the annotation {names.ANN_ADDRESS_POOL} names pool '{env.ns}-smal', which does not exist; did you mean "
        f"'{small}'? (pools: {', '.join(sorted(pools))})"]

    internal = explain(env, control_plane, "internal")
    assert internal["verdict"]["reason"] == "NotOurs" and "type is ClusterIP" in internal["verdict"]["message"]

    second = explain(env, control_plane, "second")
    assert second["verdict"]["reason"] == "NoAdvertisement"
    assert second["verdict"]["message"] == f"203.0.113.11 — no L2Advertisement selects pool {small}"

    first = explain(env, control_plane, "first")
    assert first["verdict"] == {"ok": True, "reason": "Announced", "message": f"203.0.113.10 announced by {node} "
                                                                               "on eth0 (Responder) since "
                                                                               "2025-01-01T00:00:00Z"}

    # The readable form of explain, and YAML for scripts.
    text = leifurctl(control_plane, "explain", "late", "-n", env.ns)
    assert text.returncode == 0, text.stderr
    assert field(text.stdout, "Verdict") == (f"Exhausted: no IPv4 address left for {env.ns}/late in pools {small} "
                                             "(2/2 in use)")
    assert "deciding now with the controller's code: the same" in text.stdout
    as_yaml = yaml.safe_load(leifurctl(control_plane, "explain", f"{env.ns}/lost", "-o", "yaml").stdout)
    assert as_yaml["verdict"]["reason"] == "NoPool" and as_yaml["service"] == f"{env.ns}/lost"
    status_yaml = yaml.safe_load(leifurctl(control_plane, "status", "-n", env.ns, "-o", "yaml").stdout)
    assert [s["name"] for s in status_yaml["services"]] == ["late", "lost", "thief", "second", "first"]

    missing = leifurctl(control_plane, "explain", f"{env.ns}/nobody")
    assert missing.returncode == 1 and f"Service {env.ns}/nobody not found" in missing.stderr


def test_explain_follows_an_ip_from_no_advertisement_to_announced(env, control_plane, world):
    pool = env.pool("lan", ["198.51.100.0/29"])
    env.controller()
    env.svc("web")
    ip = env.wait_ips("web")[0]
    key = f"{env.ns}/web"

    def verdict() -> dict:
        return explain(env, control_plane, "web")["verdict"]

    assert verdict() == {"ok": False, "reason": "NoAdvertisement",
                         "message": f"{ip} — no L2Advertisement selects pool {pool}"}

    # Only this test's nodes may announce, whatever Nodes other tests left behind.
    mine = {"leifur.test/namespace": env.ns}
    world.advertisement(f"{env.ns}-l2", [pool], mine)
    assert verdict() == {"ok": False, "reason": "NoReadyEndpoints", "message": f"{ip} — {key} has no ready endpoint"}

    node = f"{env.ns}-n1"
    world.node(node, mine)
    world.ready_endpoint(env.ns, "web", node)
    rep = explain(env, control_plane, "web")
    assert rep["verdict"]["reason"] == "NoEligibleNode"
    assert node not in rep["agentsSeen"]
    assert rep["verdict"]["message"] == (f"{ip} — no agent seen on a node that may announce it; node {node} would, "
                                         f"once its agent runs (agents seen: {', '.join(rep['agentsSeen']) or 'none'})")

    # The agent on the node announces the IP and says so in its record.
    world.agent_record(node, ip, [key], pool)
    rep = explain(env, control_plane, "web")
    assert rep["verdict"]["ok"] and rep["verdict"]["reason"] == "Announced"
    (ann,) = rep["announcements"]
    assert ann["announcedBy"][0]["node"] == node and ann["expectedNode"] == node and ann["pool"] == pool
    assert node in rep["agentsSeen"]
    assert any(e["reason"] == "IPAllocated" for e in rep["events"])
    text = leifurctl(control_plane, "explain", key)
    assert text.returncode == 0, text.stderr
    assert field(text.stdout, "Verdict").startswith(f"Announced: {ip} announced by {node} on eth0 (Responder)")
    row = next(line for line in text.stdout.splitlines() if line.startswith(ip))
    assert row.split()[:4] == [ip, pool, node, "Announced"]

    status = by_service(ctl_json(control_plane, "status", "-n", env.ns))
    assert status["web"]["state"] == "OK" and status["web"]["announcements"][0]["nodes"] == [node]

    # A second node's record claiming the same IP (a partition, or a crashed agent's stale record).
    other = f"{env.ns}-n2"
    world.node(other, mine)
    world.agent_record(other, ip, [key], pool)
    rep = explain(env, control_plane, "web")
    assert rep["verdict"]["reason"] == "MultipleAnnouncers"
    assert sorted(r["node"] for r in rep["announcements"][0]["announcedBy"]) == sorted([node, other])
    status = by_service(ctl_json(control_plane, "status", "-n", env.ns))
    assert status["web"]["state"] == "MultipleAnnouncers"


def test_explain_shows_an_address_conflict_an_agent_reports(env, control_plane, world):
    pool = env.pool("lan", ["198.51.100.0/29"])
    env.controller()
    env.svc("web")
    ip = env.wait_ips("web")[0]
    key = f"{env.ns}/web"
    node = f"{env.ns}-n1"
    world.node(node, {"leifur.test/namespace": env.ns})
    world.agent_record(node, ip, [key], pool)
    world.custom.patch_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES, node, {
        "status": {"conflicts": [{"ip": ip, "mac": "02:00:00:00:00:3e", "interface": "eth0", "kind": "InUse",
                                  "since": "2025-01-01T00:00:00Z", "services": [key]}]}})
    rep = explain(env, control_plane, "web")
    assert rep["verdict"]["reason"] == "AddressInUse"
    assert ip in rep["verdict"]["message"] and "02:00:00:00:00:3e" in rep["verdict"]["message"]
    assert rep["conflicts"] == [{"node": node, "ip": ip, "mac": "02:00:00:00:00:3e", "interface": "eth0",
                                 "kind": "InUse", "since": "2025-01-01T00:00:00Z"}]
    text = leifurctl(control_plane, "explain", key)
    assert text.returncode == 0, text.stderr
    assert field(text.stdout, "Conflicts").startswith(f"{ip}: InUse by 02:00:00:00:00:3e")


def test_status_and_explain_fail_clearly_without_a_cluster(tmp_path):
    missing = tmp_path / "nope.kubeconfig"
    for args in (["status"], ["explain", "default/web"]):
        res = subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", *args, "--kubeconfig", str(missing)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 1
        assert res.stderr.strip() == f"leifurctl: kubeconfig {missing} does not exist"


def test_status_reports_a_stray_announcement(env, control_plane, world):
    # An IP in an agent's record that no Service of ours holds: the record is stale.
    node = f"{env.ns}-n1"
    world.node(node)
    world.agent_record(node, "203.0.113.99", [f"{env.ns}/gone"], "nowhere")
    report = ctl_json(control_plane, "status", "-n", env.ns)
    stray = [s for s in report["strayAnnouncements"] if s["ip"] == "203.0.113.99"]
    assert stray and stray[0]["nodes"] == [node]
    text = leifurctl(control_plane, "status", "-n", env.ns).stdout
    assert "warning: 203.0.113.99 is announced by " + node in text


def kubectl_leifur(control_plane, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`kubectl leifur ARGS` with the real kubectl, which finds the plugin kubectl-leifur on PATH (the
    console script pyproject.toml installs next to leifurctl) and runs it with the user's KUBECONFIG."""
    kubectl = gobuild.ensure_built("kubectl")
    bindir = Path(sys.executable).parent
    assert (bindir / "kubectl-leifur").exists(), "kubectl-leifur is not installed: run hack/bootstrap.sh"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "KUBECONFIG": str(control_plane.kubeconfig), "HOME": str(tmp_path)}
    return subprocess.run([str(kubectl), "leifur", *args], capture_output=True, text=True, timeout=120, env=env)


def test_kubectl_leifur_is_leifurctl_and_status_exits_3_while_it_lists_problems(env, control_plane, tmp_path):
    version = kubectl_leifur(control_plane, tmp_path, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"kubectl leifur {leifur.__version__} (revision {leifur.revision()})"
    usage = kubectl_leifur(control_plane, tmp_path, "status", "--help")
    assert usage.stdout.startswith("usage: kubectl leifur status ") and "  kubectl leifur status -n web" in usage.stdout

    pool = env.pool("one", ["198.51.100.200"])
    env.controller()
    env.svc("first")
    env.wait_ips("first")
    env.svc("second")
    env.wait_condition("second", "False", "Exhausted")
    listed = kubectl_leifur(control_plane, tmp_path, "status", "-n", env.ns)
    assert listed.returncode == 3, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert "Exhausted" in rows[pool] and "Exhausted" in rows[f"{env.ns}/second"]

    # Nothing of ours left in the namespace, the pool free again: nothing to list, exit 0.
    for name in ("first", "second"):
        env.cluster.delete_service(env.ns, name)
    wait_for(lambda: not any(env.cluster.service_exists(env.ns, n) for n in ("first", "second")),
             what="both Services deleted")
    fine = kubectl_leifur(control_plane, tmp_path, "status", "-n", env.ns)
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert f"No LoadBalancer Service without a loadBalancerClass in namespace {env.ns}." in fine.stdout
