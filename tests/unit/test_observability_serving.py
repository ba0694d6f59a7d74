"""The two listeners on the loopback: the metrics port speaks only TLS and serves only what the
authorizer allows; the health port answers the probes and nothing else; the certificate is made
in memory or read (and read again) from a directory. The authorizer here decides from a table;
against the real API server: tests/integration/test_metrics_port.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from leifur.kube import certificate, observability
from leifur.kube.metrics_auth import ALLOWED, FORBIDDEN, UNAUTHENTICATED, Authorizer, Decision


def table_reviewer(token: str, path: str, now: float) -> Decision:
    if token == "reader":
        return Decision(ALLOWED if path == "/metrics" else FORBIDDEN, "reader", now)
    if token == "prober":
        return Decision(ALLOWED if path != "/metrics" else FORBIDDEN, "prober", now)
    return Decision(UNAUTHENTICATED, "", now)


class State:
    healthy = True
    ready = False


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int, State]]:
    state = State()
    tls = certificate.ServingCertificate(None, ["node-a", "192.0.2.11"])
    metrics = observability.serve("127.0.0.1:0", lambda: state.healthy, lambda: state.ready,
                                  Authorizer(None, reviewer=table_reviewer), tls)
    health = observability.serve_health("127.0.0.1:0", lambda: state.healthy, lambda: state.ready)
    yield metrics.server_port, health.server_port, state
    observability.Endpoints(metrics, health).shutdown()


def https_get(port: int, path: str, token: str | None = None) -> tuple[int, str, dict[str, str]]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    resp = conn.getresponse()
    out = resp.status, resp.read().decode(), dict(resp.getheaders())
    conn.close()
    return out


def http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    out = resp.status, resp.read().decode()
    conn.close()
    return out


@pytest.mark.parametrize(("token", "path", "status", "body"), [
    (None, "/metrics", 401, "unauthorized"),
    (None, "/readyz", 401, "unauthorized"),
    (None, "/nothing-here", 401, "unauthorized"),
    ("forged", "/metrics", 401, "unauthorized"),
    ("reader", "/metrics", 200, "# TYPE"),
    ("reader", "/healthz", 403, "forbidden"),
    ("prober", "/metrics", 403, "forbidden"),
    ("prober", "/healthz", 200, "ok"),
    ("prober", "/livez", 200, "ok"),
    ("prober", "/readyz", 503, "not ok"),
    ("reader", "/nothing-here", 404, "not found"),
], ids=["anonymous-metrics", "anonymous-readyz", "anonymous-unknown-path", "invalid-token", "reader-metrics",
        "reader-healthz", "prober-metrics", "prober-healthz", "prober-livez", "prober-not-ready",
        "unknown-path-with-a-token"])
def test_the_metrics_port_serves_what_the_token_may_get(ports, token, path, status, body) -> None:
    ports[2].ready = False
    got_status, got_body, headers = https_get(ports[0], path, token)
    assert (got_status, body in got_body) == (status, True), got_body
    if status == 401:
        assert headers["WWW-Authenticate"] == "Bearer"


def test_plain_http_on_the_metrics_port_gets_nothing(ports) -> None:
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer reader\r\n\r\n")
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1" not in got and b"leifur_" not in got and b"# TYPE" not in got


@pytest.mark.parametrize(("path", "ready", "status", "body"), [
    ("/healthz", False, 200, "ok"),
    ("/livez", False, 200, "ok"),
    ("/readyz", False, 503, "not ok"),
    ("/readyz", True, 200, "ok"),
    ("/metrics", True, 404, "metrics are on the metrics port"),
    ("/", True, 404, "not found"),
], ids=["healthz", "livez", "not-ready", "ready", "no-metrics", "nothing-else"])
def test_the_health_port_answers_the_probes_without_a_token_and_nothing_else(ports, path, ready, status,
                                                                              body) -> None:
    ports[2].ready = ready
    got_status, got_body = http_get(ports[1], path)
    assert got_status == status and body in got_body, got_body


def served_certificate(port: int) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_self_signed_certificate_names_the_node_and_lasts_a_year(ports) -> None:
    cert = served_certificate(ports[0])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-a"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.11")]
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365)


def test_each_start_makes_a_new_key_and_writes_no_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    a = certificate.self_signed(["n"])
    certificate.context_from_memory(*a)
    assert a != certificate.self_signed(["n"])
    assert list(tmp_path.iterdir()) == []
    # The memory file it went through is closed once loaded.
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert not [link for link in links if "leifur-metrics-tls" in link]


def write_pair(directory: Path, name: str) -> x509.Certificate:
    cert_pem, key_pem = certificate.self_signed([name])
    # As the kubelet updates a mounted Secret: new files, then swapped in.
    for file, data in ((certificate.CERT_FILE, cert_pem), (certificate.KEY_FILE, key_pem)):
        tmp = directory / f".{file}.tmp"
        tmp.write_bytes(data)
        tmp.replace(directory / file)
    return x509.load_pem_x509_certificate(cert_pem)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_certificate_from_a_directory_is_served_and_a_renewal_is_picked_up(tmp_path: Path) -> None:
    first = write_pair(tmp_path, "first.example")
    clock = Clock()
    tls = certificate.ServingCertificate(str(tmp_path), ["ignored"], clock=clock)
    server = observability.serve("127.0.0.1:0", lambda: True, lambda: True,
                                 Authorizer(None, reviewer=table_reviewer), tls)
    try:
        assert served_certificate(server.server_port) == first
        renewed = write_pair(tmp_path, "renewed.example")
        # Looked at again only every RELOAD_CHECK_SECONDS.
        assert served_certificate(server.server_port) == first
        clock.now += certificate.RELOAD_CHECK_SECONDS
        assert served_certificate(server.server_port) == renewed
        # A broken pair (a half-written renewal) is not taken: the last good one stays.
        (tmp_path / certificate.KEY_FILE).write_text("not a key")
        clock.now += certificate.RELOAD_CHECK_SECONDS
        assert served_certificate(server.server_port) == renewed
    finally:
        server.shutdown()
        server.server_close()
