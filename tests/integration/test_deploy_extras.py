"""deploy/ beyond the base: the examples (applied for real, and their pool serving a Service
through the real controller), the controller's PodDisruptionBudget, and the optional monitoring
kit (rendered by kubectl, its plain objects accepted by the API server, its queries naming only
metrics the programs export)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import subprocess

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import REGISTRY

from leifur.agent import metrics as agent_metrics
from leifur.announce.election import parse_advertisement
from leifur.controller import metrics as controller_metrics
from leifur.ipam.pool import parse_pool
from leifur.kube import metrics as kube_metrics
from leifur.kube import observability
from leifur.model import names
from leifur.model.settings import AgentSettings, ControllerSettings
from leifur_dev import gobuild, promtool
from leifur_dev.cluster import REPO, wait_for

pytestmark = pytest.mark.controlplane

EXAMPLES = REPO / "deploy" / "examples"
MONITORING = REPO / "deploy" / "monitoring"
EXAMPLE_POOL = yaml.safe_load((EXAMPLES / "ipaddresspool.yaml").read_text())
EXAMPLE_AD = yaml.safe_load((EXAMPLES / "l2advertisement.yaml").read_text())
DOC_NETWORKS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                  "2001:db8::/32")]


@pytest.fixture(scope="module")
def kubectl(control_plane):
    exe = str(gobuild.ensure_built("kubectl"))

    def run(*args: str, stdin: str | None = None) -> str:
        res = subprocess.run([exe, "--kubeconfig", str(control_plane.kubeconfig), *args], input=stdin,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
        return res.stdout

    return run


def _remove(custom: client.CustomObjectsApi, plural: str, name: str) -> None:
    """Delete a cluster-scoped object of ours even if a stopped controller left its finalizer on it."""
    with contextlib.suppress(ApiException):
        custom.delete_cluster_custom_object(names.GROUP, names.VERSION, plural, name)
    with contextlib.suppress(ApiException):
        custom.patch_cluster_custom_object(names.GROUP, names.VERSION, plural, name, {"metadata": {"finalizers": None}},
                                           _content_type="application/merge-patch+json")

    def gone() -> bool:
        try:
            custom.get_cluster_custom_object(names.GROUP, names.VERSION, plural, name)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    wait_for(gone, 30, what=f"{plural}/{name} deleted")


@pytest.fixture(scope="module")
def examples(kubectl, cluster, api_client):
    """The base, then the example pool and advertisement, as deploy/examples/kustomization.yaml
    says. The example objects are removed afterwards (other tests share the API server, and an
    auto-assigning pool would hand them its addresses); the base's objects stay, as other tests
    apply them too."""
    out = kubectl("apply", "--server-side", "-k", str(REPO / "deploy"))
    out += kubectl("apply", "--server-side", "-k", str(EXAMPLES))
    yield out
    custom = client.CustomObjectsApi(api_client)
    _remove(custom, names.POOLS, EXAMPLE_POOL["metadata"]["name"])
    _remove(custom, names.L2ADVERTISEMENTS, EXAMPLE_AD["metadata"]["name"])


# -- the examples and the base's PodDisruptionBudget ----------------------------------------


def test_the_examples_apply_after_the_base(examples, cluster):
    for obj in (f"ipaddresspool.leifur.io/{EXAMPLE_POOL['metadata']['name']}",
                f"l2advertisement.leifur.io/{EXAMPLE_AD['metadata']['name']}",
                "deployment.apps/leifur-controller", "daemonset.apps/leifur-agent",
                "poddisruptionbudget.policy/leifur-controller"):
        assert f"{obj} serverside-applied" in examples, obj
    pool = cluster.pool(EXAMPLE_POOL["metadata"]["name"])
    assert pool["spec"]["addresses"] == EXAMPLE_POOL["spec"]["addresses"]
    ad = cluster.custom.get_cluster_custom_object(names.GROUP, names.VERSION, names.L2ADVERTISEMENTS,
                                                  EXAMPLE_AD["metadata"]["name"])
    # The advertisement announces the example pool (as the agent reads it).
    assert parse_advertisement(ad).selects_pool(pool["metadata"]["name"], pool["metadata"].get("labels") or {})


def test_the_example_addresses_are_documentation_addresses():
    pool = parse_pool(EXAMPLE_POOL["metadata"]["name"], EXAMPLE_POOL["spec"])
    assert pool.size(4) > 0 and pool.size(6) > 0  # shows both families
    for entry in EXAMPLE_POOL["spec"]["addresses"]:
        first, _, last = entry.partition("-")
        for text in (first, last or first):
            net = ipaddress.ip_network(text.strip(), strict=False)
            assert any(net.subnet_of(d) for d in DOC_NETWORKS if d.version == net.version), entry


def test_the_controller_gives_a_service_an_address_from_the_example_pool(examples, env):
    name = EXAMPLE_POOL["metadata"]["name"]
    env.controller()
    env.svc("web", annotations={names.ANN_ADDRESS_POOL: name})
    ip = ipaddress.ip_address(env.wait_ips("web")[0])
    assert parse_pool(name, EXAMPLE_POOL["spec"]).contains(ip)
    wait_for(lambda: (env.cluster.pool_condition(name, names.COND_POOL_VALID) or {}).get("status") == "True",
             what="example pool Valid")


def test_the_controller_pdb_keeps_one_of_the_two_replicas(examples, api_client):
    pdb = client.PolicyV1Api(api_client).read_namespaced_pod_disruption_budget("leifur-controller", "leifur-system")
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment("leifur-controller", "leifur-system")
    assert pdb.spec.min_available == 1 and deployment.spec.replicas == 2
    # It guards exactly the controller's Pods: the selector matches their template, not the agent's.
    selector = pdb.spec.selector.match_labels
    assert selector.items() <= deployment.spec.template.metadata.labels.items()
    daemonset = client.AppsV1Api(api_client).read_namespaced_daemon_set("leifur-agent", "leifur-system")
    assert not selector.items() <= daemonset.spec.template.metadata.labels.items()


# -- monitoring ------------------------------------------------------------------------------------

_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregations, keywords, label names or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, $__rate_interval
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    found = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if m.group().lower() in _NOT_METRICS or re.match(r"\s*\(", expr[m.end():]):
            continue
        found.add(m.group())
    return found


def exported_metrics() -> set[str]:
    # Importing the programs' metric modules registered their metrics in the default registry.
    assert agent_metrics.ANNOUNCED and controller_metrics.POOL_IN_USE and kube_metrics.WORKQUEUE_DEPTH
    # Every sample name the programs can expose (a counter x registers x, x_total, x_created;
    # a histogram its _bucket, _count, _sum).
    return {n for n in REGISTRY._names_to_collectors if n.startswith("leifur_")}


def rule_exprs() -> dict[str, str]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def test_metric_names_finds_what_a_query_selects():
    expr = ('histogram_quantile(0.95, sum by (le, x_label) (rate(a_bucket{pool="p",l=~"b|c"}[$__rate_interval])))'
            ' / on (pool) group_left () label_replace(b_total, "family", "ipv$1", "family", "IPv(4|6)")'
            " or vector(1e3) > bool 0.9 unless c:recorded offset 5m")
    assert metric_names(expr) == {"a_bucket", "b_total", "c:recorded"}


def test_alert_rules_query_only_metrics_the_programs_export():
    exported = exported_metrics()
    assert "leifur_pool_addresses_in_use" in exported and "leifur_agent_announced_ips" in exported
    rules = rule_exprs()
    assert {"LeifurPoolNearlyExhausted", "LeifurIPNotAnnounced"} <= rules.keys()
    for alert, expr in rules.items():
        used = metric_names(expr)
        assert used, f"{alert}: no metric in {expr!r}"
        assert used <= exported, f"{alert}: unknown metrics {used - exported}"


def test_the_bgp_alerts_fire_for_a_session_or_bfd_down_past_two_minutes_and_not_before(tmp_path):
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    by_name = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}

    def fired(alert: str, node: str) -> dict:
        # promtool compares the annotations too: the rule's own, with the labels filled in.
        labels = {"node": node, "peer": "r1"}
        annotations = {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], v)
                       for k, v in by_name[alert]["annotations"].items()}
        return {"exp_labels": {**labels, "severity": "warning"}, "exp_annotations": annotations}

    tests = [{
        "interval": "1m",
        "input_series": [
            {"series": 'leifur_agent_bgp_session_up{node="n1",peer="r1"}', "values": "1 1 0 0 0 0"},
            {"series": 'leifur_agent_bgp_session_up{node="n2",peer="r1"}', "values": "1 1 1 1 1 1"},
            {"series": 'leifur_agent_bfd_session_up{node="n1",peer="r1"}', "values": "1 1 1 1 1 1"},
            {"series": 'leifur_agent_bfd_session_up{node="n2",peer="r1"}', "values": "1 0 0 0 0 0"},
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "LeifurBGPSessionDown", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "LeifurBGPSessionDown",
             "exp_alerts": [fired("LeifurBGPSessionDown", "n1")]},
            {"eval_time": "2m", "alertname": "LeifurBFDSessionDown", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "LeifurBFDSessionDown",
             "exp_alerts": [fired("LeifurBFDSessionDown", "n2")]},
        ],
    }]
    assert promtool.test_rules(rule["spec"], tests, str(tmp_path)) == []


def test_the_not_announced_rule_joins_the_controllers_family_with_the_agents_as_is():
    # Both programs label the family ipv4/ipv6 (the agent's series: tests/netns/test_agent.py), so
    # the rule joins them on (family) without relabelling.
    m = controller_metrics
    m.set_pool_usage("family-probe", 4, 10, 1)
    m.set_pool_usage("family-probe", 6, 10, 1)
    try:
        controller_families = {s.labels["family"] for fam in REGISTRY.collect() for s in fam.samples
                               if s.name == "leifur_pool_addresses_in_use" and s.labels["pool"] == "family-probe"}
    finally:
        m.forget_pool("family-probe")
    assert controller_families == {"ipv4", "ipv6"}
    expr = rule_exprs()["LeifurIPNotAnnounced"]
    assert "on (family)" in expr and "label_replace" not in expr


def test_the_grafana_dashboard_queries_only_metrics_the_programs_export():
    exported = exported_metrics()
    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in dash["templating"]["list"])
    targets = [(p["title"], t) for p in dash["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 5
    for title, target in targets:
        used = metric_names(target["expr"])
        assert used, f"{title}: no metric in {target['expr']!r}"
        assert used <= exported, f"{title}: unknown metrics {used - exported}"
        assert target["datasource"]["uid"] == "${datasource}", title


def test_the_monitoring_kit_renders_and_its_plain_objects_are_accepted(kubectl, examples):
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(MONITORING))) if d]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        if not d["kind"].startswith("Cluster"):
            assert d["metadata"]["namespace"] == "leifur-system", d["metadata"]["name"]
        by_kind.setdefault(d["kind"], []).append(d)
    assert sorted(by_kind) == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "PrometheusRule", "Service",
                               "ServiceMonitor"]
    (dashboard_cm,) = by_kind["ConfigMap"]
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard_cm["data"]["leifur.json"]) == dashboard()

    # Each Service selects one program's Pods (as the base deploys them) on its metrics port.
    (monitor,) = by_kind["ServiceMonitor"]
    workloads = {}
    for path in ("deploy/controller/deployment.yaml", "deploy/agent/daemonset.yaml"):
        w = yaml.safe_load((REPO / path).read_text())
        workloads[w["metadata"]["name"]] = w["spec"]["template"]
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    assert services.keys() == workloads.keys()
    for name, svc in services.items():
        pod = workloads[name]
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), name
        (container,) = pod["spec"]["containers"]
        port = next(p for p in container["ports"] if p["name"] == "metrics")
        (svc_port,) = svc["spec"]["ports"]
        assert svc_port["targetPort"] == "metrics" and svc_port["port"] == port["containerPort"]
        assert f"--metrics-address=:{port['containerPort']}" in container["args"]
        # ...and the ServiceMonitor selects the Service and scrapes that port.
        labels = svc["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for expr in monitor["spec"]["selector"].get("matchExpressions", []):
            assert expr["operator"] == "In" and labels[expr["key"]] in expr["values"]
        assert svc_port["name"] in {e["port"] for e in monitor["spec"]["endpoints"]}

    # The metrics port is HTTPS and wants a token: the ServiceMonitor sends Prometheus's own, and
    # the kit lets that ServiceAccount (kustomize leaves its namespace alone) get /metrics, only that.
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["scheme"] == "https"
        assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
        assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}  # self-signed unless --metrics-cert-dir
    (role,) = by_kind["ClusterRole"]
    (binding,) = by_kind["ClusterRoleBinding"]
    assert role["metadata"]["name"] == "leifur-metrics-reader"
    assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}]

    # The API server accepts the Services, the dashboard's ConfigMap and the reader's RBAC.
    # (ServiceMonitor and PrometheusRule need the Prometheus Operator's CRDs, which this cluster
    # does not have.)
    plain = yaml.safe_dump_all([*by_kind["Service"], dashboard_cm, role, binding])
    out = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=plain)
    assert out.count("serverside-applied (server dry run)") == 5, out


@pytest.mark.parametrize(("path", "defaults"), [
    ("deploy/controller/deployment.yaml", ControllerSettings()),
    ("deploy/agent/daemonset.yaml", AgentSettings()),
], ids=["controller", "agent"])
def test_the_kubelet_probes_the_health_port_the_program_opens(path, defaults):
    pod = yaml.safe_load((REPO / path).read_text())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    # The manifests say the defaults out loud; the defaults are what the docs promise.
    assert flags["metrics-address"] == f":{defaults.metrics_port}"
    assert flags["health-address"] == defaults.health_address
    host, port = observability.parse_address(flags["health-address"])
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["health"]["containerPort"] == port
    for probe, probe_path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (probe_path, "health"), probe
        assert get.get("scheme", "HTTP") == "HTTP", probe
        if ipaddress.ip_address(host).is_loopback:
            # Only from the node's own network namespace: the agent's, since it runs in the node's.
            assert pod.get("hostNetwork") is True and get["host"] == host, probe
        else:
            assert "host" not in get, probe  # the Pod's IP
