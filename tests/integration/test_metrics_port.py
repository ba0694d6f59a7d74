"""The metrics port against the real API server: who gets the metrics is decided by the API server
from the caller's token (TokenReview, SubjectAccessReview), with deploy/'s RBAC; the health port
answers the kubelet without a token and serves no metrics; and when the API server is gone, the
last decision stands."""

from __future__ import annotations

import socket
import subprocess
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur.kube import certificate, observability
from leifur.kube.metrics_auth import Authorizer
from leifur.model.settings import MetricsAuthSettings
from leifur_dev import gobuild
from leifur_dev.cluster import (
    REPO,
    ServedProcess,
    metrics_reader,
    metrics_reader_token,
    service_account_kubeconfig,
    wait_for,
)

pytestmark = pytest.mark.controlplane


def token_of(api_client: client.ApiClient, namespace: str, name: str) -> str:
    """A token of the ServiceAccount namespace/name (made if missing), from the TokenRequest API."""
    core = client.CoreV1Api(api_client)
    try:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    except ApiException as e:
        if e.status != 409:
            raise
    return core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 3600}}
                                                        ).status.token


def plain_http_get(port: int, path: str) -> bytes:
    """What a plain-HTTP client gets from `port`: whatever arrives before the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
        return got


def test_only_a_token_with_the_documented_role_gets_the_metrics(env, control_plane, api_client):
    # The controller as deploy/ runs it: its own ServiceAccount, which must be allowed to ask the
    # API server about callers' tokens.
    kubectl = str(gobuild.ensure_built("kubectl"))
    subprocess.run([kubectl, "--kubeconfig", str(control_plane.kubeconfig), "apply", "--server-side", "-f",
                    str(REPO / "deploy" / "controller" / "rbac.yaml")], check=True, capture_output=True, timeout=60)
    kubeconfig = service_account_kubeconfig(api_client, control_plane.server,
                                            control_plane.directory / "pki" / "ca.crt", "leifur-system",
                                            "leifur-controller", env.tmp / "sa.kubeconfig")
    c = env.controller(kubeconfig=kubeconfig, identity="metrics-auth")
    reader = c.token  # the ServiceAccount deploy/monitoring/metrics-reader.yaml binds to leifur-metrics-reader
    nobody = token_of(api_client, env.ns, "not-a-reader")

    # Anonymous: refused, whatever the path, without a word about what is there.
    for path in ("/metrics", "/readyz", "/healthz", "/nothing"):
        status, body = c.get(path, token="")
        assert status == 401 and "leifur_" not in body, path
    # A made-up token: the TokenReview says it is nobody.
    assert c.get("/metrics", token="not.a.token")[0] == 401
    # A real ServiceAccount without the role: authenticated, not allowed.
    status, body = c.get("/metrics", token=nobody)
    assert status == 403 and "leifur_" not in body
    # The reader: Prometheus's text format.
    status, body = c.get("/metrics", token=reader)
    assert status == 200
    assert "# TYPE leifur_controller_is_leader gauge" in body
    # The probes' paths on the metrics port: any authenticated identity may get them (the API
    # server's own system:public-info-viewer role grants /healthz, /livez and /readyz to all).
    assert c.get("/readyz", token=nobody)[0] == 200

    # Plain HTTP on the metrics port: no HTTP answer at all, so no metrics.
    got = plain_http_get(c.port, "/metrics")
    assert b"HTTP/1" not in got and b"leifur_" not in got

    # The health port: the probes, without a token; nothing else.
    assert c.get_health("/readyz") == (200, "ok\n")
    assert c.get_health("/healthz") == (200, "ok\n")
    status, body = c.get_health("/metrics")
    assert status == 404 and "leifur_" not in body


class InProcess(ServedProcess):
    """observability.serve in this process, with a real API client, for tests that change the world
    around it (RBAC, the API server itself) and need a short cache."""

    what = "metrics port"

    def __init__(self, api_client: client.ApiClient, token: str, settings: MetricsAuthSettings) -> None:
        self.token = token
        self.server = observability.serve("127.0.0.1:0", lambda: True, lambda: True,
                                          Authorizer(api_client, settings),
                                          certificate.ServingCertificate(None, ["test"]))

    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def in_process(api_client):
    servers: list[InProcess] = []

    def make(token: str, **settings) -> InProcess:
        servers.append(InProcess(api_client, token, MetricsAuthSettings(**settings)))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_a_role_taken_away_stops_working_once_the_decision_expires(in_process, api_client, env):
    metrics_reader(api_client)  # the ClusterRole, as deploy/monitoring has it
    name = f"reader-{uuid.uuid4().hex[:6]}"
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "leifur-metrics-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": env.ns}]})
    try:
        port = in_process(token_of(api_client, env.ns, name), cache_seconds=1)
        wait_for(lambda: port.get("/metrics")[0] == 200, what="the new binding honoured")
    finally:
        rbac.delete_cluster_role_binding(name)
    wait_for(lambda: port.get("/metrics")[0] == 403, what="the removed binding honoured after the cache")


def test_while_the_api_server_is_down_the_last_decision_stands(in_process, api_client, env, control_plane):
    nobody = token_of(api_client, env.ns, "not-a-reader")
    # Every decision is stale at once, and the API server is asked again on every request.
    port = in_process(metrics_reader_token(api_client), cache_seconds=0.001, retry_after_failure=0)
    assert port.get("/metrics")[0] == 200
    assert port.get("/metrics", token=nobody)[0] == 403
    control_plane.stop_component("kube-apiserver", grace=3)
    try:
        # Each request tries the API server, cannot reach it, and answers as last decided.
        for _ in range(3):
            status, body = port.get("/metrics")
            assert status == 200 and "# TYPE" in body
            assert port.get("/metrics", token=nobody)[0] == 403
        # A token never seen, or a path never asked for: nothing to go by.
        assert port.get("/metrics", token="never.seen")[0] == 503
        assert port.get("/readyz")[0] == 503
    finally:
        control_plane.start_component("kube-apiserver")
        control_plane.wait_ready()
    wait_for(lambda: port.get("/readyz")[0] == 200, what="decided anew once the API server is back")
    assert port.get("/metrics", token="never.seen")[0] == 401

