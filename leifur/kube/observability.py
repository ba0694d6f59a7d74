"""Logging and the two listeners both programs open: the metrics port (HTTPS, every request
authorised by the caller's token: metrics_auth.py) and the health port (plain HTTP, /healthz
and /readyz only, for the kubelet)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import leifur
from leifur.kube import certificate, logfields, metrics, metrics_auth

log = logging.getLogger("leifur.observability")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: what log collectors parse without configuration. The details a
    call passes with `extra=logfields.fields(...)` are top-level keys, to filter on."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **logfields.of(record),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def add_common_flags(parser: argparse.ArgumentParser, metrics_port: int, health_address: str) -> None:
    """The flags both programs take: --kubeconfig, the two listeners, --log-level."""
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                        help="kubeconfig file (env KUBECONFIG); in-cluster config when omitted")
    parser.add_argument("--metrics-address", default=os.environ.get("LEIFUR_METRICS_ADDRESS", f":{metrics_port}"),
                        help="host:port for /metrics, /healthz, /readyz over HTTPS, to callers whose bearer token "
                             f"may get the path (TokenReview, SubjectAccessReview) (default :{metrics_port})")
    parser.add_argument("--metrics-cert-dir", default=os.environ.get("LEIFUR_METRICS_CERT_DIR") or None,
                        metavar="DIR",
                        help=f"directory with {certificate.CERT_FILE} and {certificate.KEY_FILE} for the metrics port, "
                             "read again when they change (default: a self-signed certificate made at start-up)")
    parser.add_argument("--health-address", default=os.environ.get("LEIFUR_HEALTH_ADDRESS", health_address),
                        help="host:port for /healthz and /readyz over plain HTTP, without authentication, for the "
                             f"kubelet's probes; empty: none (default {health_address})")
    parser.add_argument("--log-level", default=os.environ.get("LEIFUR_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])


def started(program: str) -> None:
    """The first log line, and leifur_build_info: which build is running."""
    metrics.BUILD_INFO.labels(program, leifur.__version__, leifur.revision()).set(1)
    logging.getLogger(program).info("%s starting", leifur.version_line(program))


def setup_logging(level: str, **defaults: str) -> None:
    """JSON lines on stderr at `level`. `defaults` are fields (logfields.FIELDS) every line carries
    unless its call gives them, e.g. the agent's node=NAME."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    if defaults:
        handler.addFilter(_DefaultFields(logfields.fields(**defaults)))
    # pyroute2's debug is a dump of every netlink message: it buries our own debug lines. Its
    # modules set their loggers' levels themselves, so a level on "pyroute2" does not hold them.
    handler.addFilter(lambda r: r.levelno >= logging.INFO or not r.name.startswith("pyroute2"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The client logs every retried request at WARNING; keep it for real trouble only.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    # pyroute2's event loop announces its selector at DEBUG on every netlink socket it opens.
    logging.getLogger("asyncio").setLevel(logging.INFO)


class _DefaultFields(logging.Filter):
    def __init__(self, defaults: dict[str, logfields.Value]) -> None:
        super().__init__()
        self.defaults = defaults

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self.defaults.items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def parse_address(address: str) -> tuple[str, int]:
    """':7472' -> ('0.0.0.0', 7472); '127.0.0.1:0' -> ('127.0.0.1', 0); '[::1]:80' -> ('::1', 80)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


Check = Callable[[], bool]

HEALTH_PATHS = ("/healthz", "/livez", "/readyz")


class _Handler(BaseHTTPRequestHandler):
    """GET of the health paths; the metrics port's handler adds /metrics and authorisation."""

    # Seconds a connection may idle, in the TLS handshake too: a client that sends nothing does
    # not hold a thread for ever.
    timeout = 10
    checks: dict[str, Check]  # path -> the check it answers; set per listener

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path != "/metrics" and path not in self.checks:
            self._reply(404, b"not found\n")
        elif self.allowed(path):
            if path == "/metrics":
                self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            else:
                ok = self.checks[path]()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"not ok\n")

    def allowed(self, path: str) -> bool:
        """Whether to serve `path`; if not, the refusal has been sent."""
        if path == "/metrics":
            self._reply(404, b"not found: metrics are on the metrics port\n")
            return False
        return True

    def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds would drown the log
        pass


def _server(address: str, handler: type[_Handler], name: str,
            tls: certificate.ServingCertificate | None = None) -> ThreadingHTTPServer:
    host, port = parse_address(address)

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

        def finish_request(self, request: Any, client_address: Any) -> None:
            if tls is None:
                super().finish_request(request, client_address)
                return
            # The TLS handshake runs here, in the connection's own thread: a slow or silent client
            # cannot hold up the accept loop.
            request.settimeout(handler.timeout)
            try:
                conn = tls.context().wrap_socket(request, server_side=True)
            except OSError:
                return  # not TLS (plain HTTP on this port), or the client went away
            try:
                super().finish_request(conn, client_address)
            finally:
                conn.close()  # wrapping took the socket over: closing `request` would not close it

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that drops the connection mid-request is not our error

    server = Server((host, port), handler)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def serve(address: str, healthy: Check, ready: Check, authorizer: metrics_auth.Authorizer,
          tls: certificate.ServingCertificate) -> ThreadingHTTPServer:
    """The metrics port: /metrics, /healthz, /readyz over HTTPS, each request authorised by
    `authorizer`. Started in a daemon thread; returns the server (its port is server.server_port)."""

    class Handler(_Handler):
        checks = {"/healthz": healthy, "/livez": healthy, "/readyz": ready}

        def do_GET(self) -> None:
            # Without a token, nothing: not even which paths exist. With one, an unknown path is
            # 404 at once, so that made-up paths cost the API server no reviews.
            if metrics_auth.bearer_token(self.headers.get("Authorization")) is None:
                self.refuse(metrics_auth.UNAUTHENTICATED, self.path.split("?")[0])
            else:
                super().do_GET()

        def allowed(self, path: str) -> bool:
            try:
                status = authorizer.check(self.headers.get("Authorization"), path)
            except Exception:
                # A bug of ours: said once in the log, and to the caller, instead of a dropped connection.
                log.exception("checking a token for %s failed", path)
                self._reply(500, b"internal error checking the token\n")
                return False
            if status == metrics_auth.ALLOWED:
                return True
            self.refuse(status, path)
            return False

        def refuse(self, status: int, path: str) -> None:
            if status == metrics_auth.UNAUTHENTICATED:
                self._reply(status, b"unauthorized: send a ServiceAccount token (Authorization: Bearer)\n",
                            headers=(("WWW-Authenticate", "Bearer"),))
            elif status == metrics_auth.FORBIDDEN:
                self._reply(status, f"forbidden: this token may not get {path}\n".encode())
            else:
                self._reply(status, b"the API server cannot check the token now\n")

    return _server(address, Handler, "metrics", tls)


def serve_health(address: str, healthy: Check, ready: Check) -> ThreadingHTTPServer:
    """The health port: /healthz and /readyz over plain HTTP, to anyone who reaches it (the kubelet),
    and nothing else. Started in a daemon thread."""

    class Handler(_Handler):
        checks = {"/healthz": healthy, "/livez": healthy, "/readyz": ready}

    return _server(address, Handler, "health")


@dataclass
class Endpoints:
    """The two listeners of a program."""

    metrics: ThreadingHTTPServer
    health: ThreadingHTTPServer | None

    def describe(self) -> str:
        health = f"health on port {self.health.server_port}" if self.health else "no health port"
        return f"metrics on port {self.metrics.server_port} (HTTPS), {health}"

    def shutdown(self) -> None:
        for server in (self.metrics, self.health):
            if server is not None:
                server.shutdown()
                server.server_close()


def serving_certificate(args: argparse.Namespace, names: Sequence[str]) -> certificate.ServingCertificate:
    """The metrics port's certificate, as --metrics-cert-dir says: its files, or self-signed for
    `names` (the Pod's or the node's) and the Pod's IP when the downward API gives it (env POD_IP).
    Raises CertificateProblem for a directory it cannot load."""
    return certificate.ServingCertificate(args.metrics_cert_dir, [*names, os.environ.get("POD_IP", "")])


def start_endpoints(args: argparse.Namespace, api_client: Any, healthy: Check, ready: Check,
                    tls: certificate.ServingCertificate) -> Endpoints:
    """Both listeners, as the common flags say."""
    metrics = serve(args.metrics_address, healthy, ready, metrics_auth.Authorizer(api_client), tls)
    health = serve_health(args.health_address, healthy, ready) if args.health_address else None
    return Endpoints(metrics, health)
