"""The Helm chart as helm sees it, without a cluster: `helm lint`, `helm template` at default and
at other values, `helm package`; and the chart at default values renders exactly the kustomize
base, so that the two cannot drift apart. (Installed into the real API server:
test_helm_install.py.)"""

from __future__ import annotations

import difflib
import shutil
import tarfile

import yaml

from leifur.model import names
from leifur_dev.chart import CHART, DEPLOY, OTHER_VALUES, helm, kustomize, objects, template, without_helm_labels


def test_helm_lint_finds_nothing(tmp_path):
    out = helm("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(OTHER_VALUES))
    out = helm("lint", "--strict", str(CHART), "--values", str(values))
    assert "0 chart(s) failed" in out


def _diff(a: dict, b: dict) -> str:
    return "\n".join(difflib.unified_diff(yaml.safe_dump(a).splitlines(), yaml.safe_dump(b).splitlines(),
                                          "kustomize", "helm", lineterm=""))


def assert_same_objects(kustomized: dict, charted: dict, what: str) -> None:
    """The same objects, field for field, once the labels helm adds are set aside; a drift is
    named object by object, with a diff."""
    charted = {k: without_helm_labels(v) for k, v in charted.items()}
    missing = sorted(kustomized.keys() - charted.keys())
    extra = sorted(charted.keys() - kustomized.keys())
    assert not missing, (f"{what} has objects the chart does not render: {missing}. Add them to "
                         "charts/leifur/templates (or, if the chart should not have them, say so in this test).")
    assert not extra, f"the chart renders objects {what} does not have: {extra}"
    drift = [f"{k}:\n{_diff(kustomized[k], charted[k])}" for k in sorted(kustomized) if kustomized[k] != charted[k]]
    assert not drift, f"the chart and {what} render these differently:\n" + "\n".join(drift)


def test_the_chart_at_default_values_renders_the_kustomize_base():
    base = objects(kustomize(DEPLOY))
    # The Namespace is the one difference at default values: helm makes the release's namespace
    # (helm install --create-namespace) and cannot own it. namespace.create renders it, the same.
    (ns_key,) = [k for k in base if k[0] == "Namespace"]
    namespace = base.pop(ns_key)
    assert_same_objects(base, objects(template()), "the kustomize base (deploy/)")
    created = objects(template("--namespace", "elsewhere", "--set", "namespace.create=true",
                               "--set", f"namespace.name={ns_key[2]}"))
    assert without_helm_labels(created[ns_key]) == namespace


def test_the_charts_monitoring_renders_deploy_monitoring():
    monitoring = objects(kustomize(DEPLOY / "monitoring"))
    charted = objects(template("--set", "metrics.serviceMonitor.enabled=true",
                               "--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.reader.enabled=true",
                               "--set", "metrics.grafanaDashboard.enabled=true", crds=False))
    base = objects(template(crds=False))
    assert_same_objects(monitoring, {k: v for k, v in charted.items() if k not in base},
                        "the monitoring kit (deploy/monitoring/)")
    assert {k: v for k, v in charted.items() if k in base} == base  # the rest unchanged


def test_the_charts_bgp_mode_renders_the_base_with_deploy_bgp(tmp_path):
    """bgp.enabled adds what the kustomize component deploy/bgp adds, field for field; off, the
    chart renders the base (the test above): existing installs render the same."""
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../deploy]\ncomponents: [../deploy/bgp]\n")
    with_bgp = objects(kustomize(tmp_path / "overlay"))
    (ns_key,) = [k for k in with_bgp if k[0] == "Namespace"]
    del with_bgp[ns_key]
    charted = objects(template("--set", "bgp.enabled=true"))
    assert_same_objects(with_bgp, charted, "the kustomize base with deploy/bgp")
    # Only the agent's DaemonSet differs from BGP mode off.
    base = objects(template())
    assert [k for k in base if base[k] != charted[k]] == [("DaemonSet", "leifur-system", "leifur-agent")]

    # The image, its pull policy and the sidecar's resources follow the values.
    rendered = objects(template("--set", "bgp.enabled=true", "--set", "image.repository=registry.example.com/lf",
                                "--set", "image.tag=9.9.9", "--set", "image.pullPolicy=Always",
                                "--set", "bgp.resources.limits.memory=99Mi"))
    _, daemonset = _workloads(rendered)
    (sidecar,) = daemonset["spec"]["template"]["spec"]["initContainers"]
    assert sidecar["image"] == "registry.example.com/lf:9.9.9" and sidecar["imagePullPolicy"] == "Always"
    assert sidecar["resources"]["limits"] == {"memory": "99Mi"}


def test_the_charts_crds_are_deploys_crds(tmp_path):
    from_files = {}
    for path in sorted((DEPLOY / "crds").glob("*.yaml")):
        from_files.update(objects(path.read_text()))
    rendered = {k: v for k, v in objects(template()).items() if k[0] == "CustomResourceDefinition"}
    assert rendered == from_files and len(rendered) == 6
    # Packaged, the link is followed: the archive holds the files themselves, byte for byte.
    helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("leifur-*.tgz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for path in sorted((DEPLOY / "crds").glob("*.yaml")):
            member = members[f"leifur/crds/{path.name}"]
            assert member.isfile()
            file = tar.extractfile(member)
            assert file is not None and file.read() == path.read_bytes()
        assert "leifur/files/monitoring/prometheusrule.yaml" in members
        assert "leifur/files/monitoring/kustomization.yaml" not in members  # .helmignore
    # The archive renders what the directory renders, monitoring included.
    everything = ("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
                  "--set", "metrics.grafanaDashboard.enabled=true")
    packaged = helm("template", "leifur", str(archive), "--namespace", "leifur-system", "--include-crds", *everything)
    assert objects(packaged) == objects(template(*everything))


def test_nothing_optional_is_rendered_by_default():
    kinds = {k[0] for k in objects(template())}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "Service", "ConfigMap", "Namespace", "Secret"}


def _workloads(rendered: dict) -> tuple[dict, dict]:
    deployment = next(v for k, v in rendered.items() if k[0] == "Deployment")
    daemonset = next(v for k, v in rendered.items() if k[0] == "DaemonSet")
    return deployment, daemonset


def test_other_values_reach_the_objects(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(OTHER_VALUES))
    rendered = objects(template("--values", str(values), "--set", "metrics.serviceMonitor.enabled=true",
                                "--set", "metrics.prometheusRule.enabled=true",
                                "--set", "metrics.prometheusRule.labels.release=kps",
                                "--set", "metrics.reader.enabled=true",
                                "--set", "metrics.reader.subjects[0].kind=ServiceAccount",
                                "--set", "metrics.reader.subjects[0].name=prom",
                                "--set", "metrics.reader.subjects[0].namespace=obs",
                                release="lb", namespace="default"))
    v = OTHER_VALUES
    # Everything namespaced is in namespace.name, not the release's namespace.
    for (kind, ns, name), obj in rendered.items():
        if kind not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ValidatingAdmissionPolicy",
                        "ValidatingAdmissionPolicyBinding"):
            assert ns == "lb-system", (kind, name)
        for subject in obj.get("subjects", []):
            if subject["name"].startswith("leifur-"):
                assert subject["namespace"] == "lb-system", (kind, name)
        if kind != "CustomResourceDefinition":  # crds/ is not templated
            assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "lb", (kind, name)

    # The leader fence reads the Lease where the controller keeps it.
    (fence,) = [o for k, o in rendered.items()
                if k[0] == "ValidatingAdmissionPolicyBinding" and o["spec"].get("paramRef")]
    assert fence["spec"]["paramRef"]["namespace"] == "lb-system"

    deployment, daemonset = _workloads(rendered)
    for workload, program in ((deployment, "controller"), (daemonset, "agent")):
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "registry.example.com/leifur:9.9.9"
        assert container["imagePullPolicy"] == "Always"
        assert pod["imagePullSecrets"] == [{"name": "pull-secret"}]
        assert f"--load-balancer-class={v['loadBalancerClass']}" in container["args"]
        for field in ("priorityClassName", "nodeSelector", "tolerations"):
            assert pod[field] == v[program][field], (program, field)
        assert container["resources"] == v[program]["resources"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == v[program]["metricsPort"] and ports["health"] == v[program]["healthPort"]
        assert f"--metrics-address=:{v[program]['metricsPort']}" in container["args"]
        assert f"--log-level={v[program]['logLevel']}" in container["args"]
        assert v[program]["extraArgs"][0] == container["args"][-1]

    c = v["controller"]
    assert deployment["spec"]["replicas"] == c["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["affinity"] == c["affinity"]
    args = pod["containers"][0]["args"]
    assert f"--health-address=:{c['healthPort']}" in args
    # A Secret the operator makes: named to the controller, which neither creates it nor may.
    assert "--heartbeat-secret=my-heartbeat-key" in args and "--no-create-heartbeat-secret" in args
    for (_, _, name), obj in rendered.items():
        for rule in obj.get("rules", []):
            assert not name.startswith(names.CONTROLLER_NAME) or "secrets" not in rule.get("resources", []), name
    (pdb,) = [o for k, o in rendered.items() if k[0] == "PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 2

    pod = daemonset["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 20
    (container,) = pod["containers"]
    hb = v["heartbeat"]
    for flag in ("--heartbeat-port=17474", "--heartbeat-interval=0.2", "--dead-after=1.5", "--heartbeat-max-age=20",
                 "--heartbeat-accept-unauthenticated", "--address-conflict-policy=yield",
                 "--health-address=127.0.0.1:17476"):
        assert flag in container["args"], flag
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["heartbeat"]["containerPort"] == ports["heartbeat"]["hostPort"] == hb["port"]
    assert ports["metrics"]["hostPort"] == 17473 and ports["health"]["hostPort"] == 17476
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == hb["secret"]["name"]

    # Monitoring follows the ports and takes the labels a Prometheus selects by.
    services = {k[2]: o for k, o in rendered.items() if k[0] == "Service"}
    assert services["leifur-controller"]["spec"]["ports"][0]["port"] == 17472
    assert services["leifur-agent"]["spec"]["ports"][0]["port"] == 17473
    (rule,) = [o for k, o in rendered.items() if k[0] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    (binding,) = [o for k, o in rendered.items() if k == ("ClusterRoleBinding", "", "leifur-metrics-reader")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prom", "namespace": "obs"}]


def test_the_heartbeat_key_secret_is_left_to_the_controller():
    # By default the controller creates the Secret (and may only create Secrets, in its namespace);
    # the chart renders no Secret: a key made by helm template would change on every render.
    rendered = objects(template())
    assert not [k for k in rendered if k[0] == "Secret"]
    roles = {k[2]: o["rules"] for k, o in rendered.items() if k[0] == "Role"
             and any("secrets" in r["resources"] for r in o["rules"])}
    # ...and the agents only read them, in the same namespace: BGPPeers' passwords.
    assert roles == {
        "leifur-controller-heartbeat-secret": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}],
        "leifur-agent-bgp-passwords": [{"apiGroups": [""], "resources": ["secrets"],
                                        "verbs": ["get", "list", "watch"]}]}
    _, daemonset = _workloads(rendered)
    (volume,) = daemonset["spec"]["template"]["spec"]["volumes"]
    assert volume["secret"]["secretName"] == names.HEARTBEAT_SECRET and volume["secret"]["optional"] is False


def test_a_misspelt_or_wrong_value_is_refused():
    # values.schema.json refuses unknown keys and values the programs would refuse at start.
    for flags, words in ((("--set", "heartbeat.deadafter=1"), "additional properties 'deadafter'"),
                         (("--set", "agent.logLevel=verbose"), "/agent/logLevel"),
                         (("--set", "agent.addressConflictPolicy=fight"), "/agent/addressConflictPolicy"),
                         (("--set", "heartbeat.secret.name=Not_A_Name"), "/heartbeat/secret/name"),
                         (("--set", "bgp.enable=true"), "additional properties 'enable'"),
                         (("--set", "bgp.enabled=yes"), "/bgp/enabled")):
        try:
            template(*flags)
        except AssertionError as e:
            assert "don't meet the specifications of the schema" in str(e) and words in str(e), (flags, e)
        else:
            raise AssertionError(f"helm template {flags} was not refused")
