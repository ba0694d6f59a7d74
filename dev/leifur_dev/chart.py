"""The Helm chart (charts/leifur) and the kustomize base (deploy/) rendered into objects, with the
real helm and kubectl built from Go modules (gobuild), for the tests that compare and install them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from leifur_dev import gobuild

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "leifur"
DEPLOY = REPO / "deploy"
# Labels helm adds to every object's metadata (_helpers.tpl: leifur.labels); kustomize adds none.
HELM_LABELS = frozenset({"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
                         "app.kubernetes.io/version"})
Key = tuple[str, str, str]  # kind, namespace ("" if cluster-scoped), name

# Every value changed from its default, each to something a test can find in the objects. (helm
# merges maps into the defaults: resources and nodeSelector are given whole.)
OTHER_VALUES = {
    "image": {"repository": "registry.example.com/leifur", "tag": "9.9.9", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull-secret"}],
    "namespace": {"name": "lb-system"},
    "loadBalancerClass": "example.com/lan",
    "heartbeat": {"port": 17474, "interval": 0.2, "deadAfter": 1.5, "maxAge": 20, "acceptUnauthenticated": True,
                  "secret": {"name": "my-heartbeat-key", "create": False}},
    "controller": {"replicas": 3, "logLevel": "debug", "metricsPort": 17472, "healthPort": 17475,
                   "extraArgs": ["--workers=8"],
                   "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                   "priorityClassName": "system-cluster-critical", "nodeSelector": {"node-role/infra": "true"},
                   "tolerations": [{"key": "infra", "operator": "Exists"}],
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                       "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]}}},
                   "podDisruptionBudget": {"minAvailable": 2}},
    "agent": {"logLevel": "warning", "metricsPort": 17473, "healthPort": 17476, "addressConflictPolicy": "yield",
              "extraArgs": ["--address-probe-count=0"],
              "resources": {"requests": {"cpu": "20m", "memory": "80Mi"}, "limits": {"memory": "160Mi"}},
              "priorityClassName": "system-cluster-critical", "nodeSelector": {"kubernetes.io/os": "linux", "lan": "a"},
              "tolerations": [{"key": "lan", "operator": "Exists", "effect": "NoSchedule"}],
              "terminationGracePeriodSeconds": 20},
}


def helm(*args: str, kubeconfig: Path | None = None, timeout: float = 120) -> str:
    """Run helm; its stdout. Fails with helm's own words. helm keeps its caches and its
    configuration under HELM_* directories of its own, never the user's."""
    exe = str(gobuild.ensure_built("helm"))
    home = gobuild.cache_root() / "helm-home"
    env = {"HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"), "PATH": "/usr/bin:/bin"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    res = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited with {res.returncode}:\n{res.stderr}{res.stdout}")
    return res.stdout


def template(*args: str, release: str = "leifur", namespace: str = "leifur-system", crds: bool = True) -> str:
    """`helm template` of the chart (with its CRDs unless crds=False); `args` are more flags
    (--set, --values)."""
    return helm("template", release, str(CHART), "--namespace", namespace, *(["--include-crds"] if crds else []),
                *args)


def kustomize(path: Path) -> str:
    """What `kubectl apply -k path` would send: `kubectl kustomize path`."""
    exe = str(gobuild.ensure_built("kubectl"))
    res = subprocess.run([exe, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path}: {res.stderr}")
    return res.stdout


def key(obj: dict) -> Key:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def objects(rendered: str) -> dict[Key, dict]:
    """The objects of a multi-document YAML stream, by kind, namespace and name."""
    found: dict[Key, dict] = {}
    for doc in yaml.safe_load_all(rendered):
        if doc:
            assert key(doc) not in found, f"rendered twice: {key(doc)}"
            found[key(doc)] = doc
    return found


def without_helm_labels(obj: dict) -> dict:
    """`obj` without the labels helm adds (on the object and on a Pod template), and without a
    labels map left empty by that: what kustomize renders for it."""
    obj = yaml.safe_load(yaml.safe_dump(obj))  # a deep copy
    metas = [obj["metadata"], ((obj.get("spec") or {}).get("template") or {}).get("metadata")]
    for meta in metas:
        if not meta or "labels" not in meta:
            continue
        meta["labels"] = {k: v for k, v in meta["labels"].items() if k not in HELM_LABELS}
        if not meta["labels"]:
            del meta["labels"]
    return obj
