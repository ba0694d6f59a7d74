"""Test and demo helpers on top of a real control plane: CRDs, pools, Services, waiting,
and the real leifur-controller run as a separate process."""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur.kube.client import request
from leifur.model import names
from leifur_dev import runtime
from leifur_dev.controlplane import free_port

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "deploy" / "crds"
METRICS_READER = REPO / "deploy" / "monitoring" / "metrics-reader.yaml"
T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll fn until it returns something truthy; its last value or exception explains a timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except (ApiException, AssertionError, KeyError) as e:
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def wait_crd_established(api_client: client.ApiClient, name: str, timeout: float = 30.0) -> None:
    """Wait until the API server serves a CRD (its Established condition is True)."""
    ext = client.ApiextensionsV1Api(api_client)

    def established() -> bool:
        conds = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conds)

    wait_for(established, timeout, what=f"CRD {name} established")


def create_test_crd(api_client: client.ApiClient, group: str, version: str, plural: str, kind: str,
                    scope: str = "Cluster") -> str:
    """A schemaless CRD for tests of generic machinery; returns its name once it is served."""
    name = f"{plural}.{group}"
    client.ApiextensionsV1Api(api_client).create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": name},
        "spec": {"group": group, "scope": scope,
                 "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                 "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
    })
    wait_crd_established(api_client, name)
    return name


def install_crds(api_client: client.ApiClient) -> None:
    """Create (or update) Leifur's CRDs and wait until they are served."""
    ext = client.ApiextensionsV1Api(api_client)
    for path in sorted(CRD_DIR.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as e:
            if e.status != 409:
                raise
            current = ext.read_custom_resource_definition(body["metadata"]["name"])
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(body["metadata"]["name"], body)
        wait_crd_established(api_client, body["metadata"]["name"])


def service_account_kubeconfig(api_client: client.ApiClient, server: str, ca_file: Path, namespace: str,
                               name: str, path: Path, bound_pod: str | None = None) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount with a real token (TokenRequest), as a Pod would.

    With `bound_pod` (a Pod's name in `namespace`) the token is bound to that Pod, and so carries
    its node's name, exactly like the projected token of a DaemonSet Pod.
    """
    spec: dict = {"expirationSeconds": 3600}
    if bound_pod:
        pod = client.CoreV1Api(api_client).read_namespaced_pod(bound_pod, namespace)
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": bound_pod, "uid": pod.metadata.uid}
    token = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        name, namespace, {"spec": spec}).status.token
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def metrics_reader(api_client: client.ApiClient) -> tuple[str, str]:
    """The ServiceAccount (namespace, name) that deploy/monitoring/metrics-reader.yaml lets read the
    metrics, with the manifest applied as it is: the one Prometheus would run as."""
    docs = [d for d in yaml.safe_load_all(METRICS_READER.read_text()) if d]
    for doc in docs:
        # Both are cluster-scoped RBAC objects: server-side apply, as kubectl apply --server-side would.
        plural = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}[doc["kind"]]
        request(api_client, "PATCH", f"/apis/rbac.authorization.k8s.io/v1/{plural}/{doc['metadata']['name']}",
                query=[("fieldManager", "leifur-dev"), ("force", "true")], body=json.dumps(doc),
                content_type="application/apply-patch+yaml")
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    (subject,) = binding["subjects"]
    return subject["namespace"], subject["name"]


_reader_tokens: dict[str, str] = {}


def metrics_reader_token(api_client: client.ApiClient) -> str:
    """A token of the metrics reader (see metrics_reader), from the TokenRequest API, as Prometheus's
    projected token would be: made once per API server, valid for a day (longer than a soak)."""
    host = api_client.configuration.host
    if host not in _reader_tokens:
        namespace, name = metrics_reader(api_client)
        core = client.CoreV1Api(api_client)
        for create in (lambda: core.create_namespace({"metadata": {"name": namespace}}),
                       lambda: core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})):
            try:
                create()
            except ApiException as e:
                if e.status != 409:
                    raise
        _reader_tokens[host] = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": 86400}}).status.token
    return _reader_tokens[host]


def lab_tls() -> ssl.SSLContext:
    """TLS to our programs' metrics port, which serves a self-signed certificate in the lab: the
    channel is encrypted, the server not verified (as the ServiceMonitor's insecureSkipVerify)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def apply_node_status(api_client: client.ApiClient, node: str) -> dict:
    """Write the L2NodeStatus of `node` as the agent does (server-side apply); returns the object."""
    body = {"apiVersion": names.API_VERSION, "kind": "L2NodeStatus", "metadata": {"name": node},
            "status": {"count": 0, "ips": "", "announcements": []}}
    return request(api_client, "PATCH", f"/apis/{names.API_VERSION}/{names.L2NODESTATUSES}/{node}",
                   query=[("fieldManager", names.AGENT_NAME), ("force", "true")], body=json.dumps(body),
                   content_type="application/apply-patch+yaml")


def wait_denied_another_record(agent: client.ApiClient, admin: client.ApiClient, other: str, what: str) -> None:
    """Wait until the admission policy refuses `agent` the record of node `other` (it loads asynchronously)."""

    def denied() -> bool:
        try:
            apply_node_status(agent, other)
        except ApiException as e:
            assert e.status in (403, 422), e
            assert "its own node" in (e.body or ""), e.body
            return True
        # Not yet loaded: undo the write and ask again.
        client.CustomObjectsApi(admin).delete_cluster_custom_object(names.GROUP, names.VERSION,
                                                                    names.L2NODESTATUSES, other)
        return False

    wait_for(denied, 30, what=what)


def exists(read: Callable[[], object]) -> bool:
    """Whether `read` finds its object: False on 404, any other API error raised."""
    try:
        read()
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


class Cluster:
    """Thin conveniences over the API for tests: dicts in, dicts out."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _dict(self, obj) -> dict:
        return self.api_client.sanitize_for_serialization(obj)

    # -- pools ----------------------------------------------------------------------------

    def create_pool(self, name: str, addresses: list[str], labels: dict | None = None, **spec) -> dict:
        body = {"apiVersion": names.API_VERSION, "kind": "IPAddressPool",
                "metadata": {"name": name, "labels": labels or {}}, "spec": {"addresses": addresses, **spec}}
        return self.custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, body)

    def pool(self, name: str) -> dict:
        return self.custom.get_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, name)

    def patch_pool(self, name: str, spec: dict) -> dict:
        return self.custom.patch_cluster_custom_object(
            names.GROUP, names.VERSION, names.POOLS, name, {"spec": spec},
            _content_type="application/merge-patch+json")

    def delete_pool(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.custom.delete_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, name)

    def pool_exists(self, name: str) -> bool:
        return exists(lambda: self.pool(name))

    def pool_condition(self, name: str, type_: str) -> dict | None:
        for c in (self.pool(name).get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return c
        return None

    # -- services -------------------------------------------------------------------------

    def create_service(self, namespace: str, name: str, ports: tuple[int, ...] = (80,), protocol: str = "TCP",
                       annotations: dict | None = None, **spec) -> dict:
        body = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": annotations or {}, "labels": spec.pop("labels", {})},
            "spec": {"type": "LoadBalancer", "selector": spec.pop("selector", {"app": name}),
                     "ports": [{"name": f"p{p}", "port": p, "protocol": protocol} for p in ports], **spec},
        }
        return self._dict(self.core.create_namespaced_service(namespace, body))

    def service(self, namespace: str, name: str) -> dict:
        return self._dict(self.core.read_namespaced_service(name, namespace))

    def patch_service(self, namespace: str, name: str, patch: dict) -> dict:
        return self._dict(self.core.patch_namespaced_service(name, namespace, patch,
                                                             _content_type="application/merge-patch+json"))

    def delete_service(self, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_service(name, namespace)

    def service_exists(self, namespace: str, name: str) -> bool:
        return exists(lambda: self.core.read_namespaced_service(name, namespace))

    def pod_exists(self, namespace: str, name: str) -> bool:
        return exists(lambda: self.core.read_namespaced_pod(name, namespace))

    def recreate_pod(self, namespace: str, body: dict) -> None:
        """Create a Pod afresh: one of that name left from an earlier run is deleted first (a new UID,
        as when a DaemonSet replaces its Pod)."""
        name = body["metadata"]["name"]
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        wait_for(lambda: not self.pod_exists(namespace, name), 30, what=f"old pod {name} gone")
        self.core.create_namespaced_pod(namespace, body)

    def ips(self, namespace: str, name: str) -> list[str]:
        status = self.service(namespace, name).get("status") or {}
        return [i["ip"] for i in (status.get("loadBalancer") or {}).get("ingress") or []]

    def service_condition(self, namespace: str, name: str) -> dict | None:
        for c in (self.service(namespace, name).get("status") or {}).get("conditions") or []:
            if c["type"] == names.COND_SERVICE_ALLOCATED:
                return c
        return None

    def events(self, namespace: str, name: str, kind: str = "Service") -> list[dict]:
        evs = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={kind}")
        return [self._dict(e) for e in evs.items]

    def has_event(self, namespace: str, name: str, reason: str, kind: str = "Service") -> dict | None:
        return next((e for e in self.events(namespace, name, kind) if e["reason"] == reason), None)

    def all_lb_ips(self) -> dict[str, list[str]]:
        """Every Service's ingress IPs, keyed namespace/name."""
        out = {}
        for s in self.core.list_service_for_all_namespaces().items:
            ing = (s.status.load_balancer.ingress or []) if s.status and s.status.load_balancer else []
            if ing:
                out[f"{s.metadata.namespace}/{s.metadata.name}"] = [i.ip for i in ing]
        return out

    def ensure_namespace(self, name: str, labels: dict | None = None) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
        except ApiException as e:
            if e.status != 409:
                raise


class ServedProcess(runtime.ChildProcess):
    """A program of ours run as a child process, with its metrics port: /metrics, /healthz and /readyz
    over HTTPS, read with the metrics reader's token (metrics_reader_token) as Prometheus would."""

    what = "process"
    log_path: Path
    token: str

    def base_url(self) -> str:
        raise NotImplementedError

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        """GET `path` on the metrics port with `token` (default: the reader's; "" for none)."""
        token = self.token if token is None else token
        req = urllib.request.Request(f"{self.base_url()}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=5, context=lab_tls()) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, value = line.rsplit(" ", 1)
            if head.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def wait_ready(self, timeout: float = 30):
        deadline = time.monotonic() + timeout

        def answers(path: str) -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return self.get(path)[0] == 200
            except OSError:
                return False

        wait_for(lambda: answers("/readyz"), timeout, what=f"{self.what} /readyz")
        # Scraped once while the API server answers: the program then keeps answering this token
        # when the API server is cut off (the last decision stands), as the chaos suite does at times.
        wait_for(lambda: answers("/metrics"), max(1.0, deadline - time.monotonic()), what=f"{self.what} /metrics")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40, width: int = 400) -> str:
        """The last `lines` of the log, each cut to `width` characters (a failing test prints
        them; CI shows only so much of its output)."""
        if not self.log_path.exists():
            return ""
        return "\n".join(line[:width] for line in self.log_path.read_text(errors="replace").splitlines()[-lines:])


class ControllerProcess(ServedProcess):
    """The real leifur-controller, run as a child process like in production."""

    what = "controller"

    def __init__(self, kubeconfig: Path, log_path: Path, *extra: str, token: str, identity: str = "c1",
                 lease_namespace: str = "leifur-system", command: list[str] | None = None) -> None:
        """`command` runs the program (default: this interpreter's; leifur_dev.image: the image's)."""
        self.port = free_port()
        # Its own: several controllers run side by side on this machine's network.
        self.health_port = free_port()
        self.log_path = log_path
        self.token = token
        self.argv = [
            *(command or [sys.executable, "-m", "leifur.controller.main"]), "--kubeconfig", str(kubeconfig),
            "--metrics-address", f"127.0.0.1:{self.port}", "--health-address", f"127.0.0.1:{self.health_port}",
            "--identity", identity,
            # Shorter than the defaults, so that a SIGKILLed leader is replaced within seconds, but
            # with the documented margin: lease - renew deadline (5 s) exceeds a write's timeout
            # (4 s), and a renewal may stall 5 s on a loaded machine before the controller exits.
            "--lease-namespace", lease_namespace, "--lease-duration", "10", "--renew-deadline", "5",
            "--retry-period", "0.5", "--log-level", "debug", *extra,
        ]
        self.proc: subprocess.Popen | None = None

    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def get_health(self, path: str) -> tuple[int, str]:
        """GET `path` on the health port, as the kubelet probes it: plain HTTP, no token."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def start(self) -> ControllerProcess:
        self.proc = runtime.spawn(self.argv, self.log_path, persistent=False)
        return self

