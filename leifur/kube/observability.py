"""Logging and the /metrics, /healthz, /readyz endpoint shared by both programs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class JSONFormatter(logging.Formatter):
    """One JSON object per line: what log collectors parse without configuration."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def add_common_flags(parser: argparse.ArgumentParser, metrics_port: int) -> None:
    """The flags both programs take: --kubeconfig, --metrics-address, --log-level."""
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                        help="kubeconfig file (env KUBECONFIG); in-cluster config when omitted")
    parser.add_argument("--metrics-address", default=os.environ.get("LEIFUR_METRICS_ADDRESS", f":{metrics_port}"),
                        help=f"host:port for /metrics, /healthz, /readyz (default :{metrics_port})")
    parser.add_argument("--log-level", default=os.environ.get("LEIFUR_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    # pyroute2's debug is a dump of every netlink message: it buries our own debug lines. Its
    # modules set their loggers' levels themselves, so a level on "pyroute2" does not hold them.
    handler.addFilter(lambda r: r.levelno >= logging.INFO or not r.name.startswith("pyroute2"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The client logs every retried request at WARNING; keep it for real trouble only.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def parse_address(address: str) -> tuple[str, int]:
    """':7472' -> ('0.0.0.0', 7472); '127.0.0.1:0' -> ('127.0.0.1', 0); '[::1]:80' -> ('::1', 80)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def serve(address: str, healthy: Callable[[], bool], ready: Callable[[], bool]) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; returns the server (its port is server.server_port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                self._check(healthy)
            elif path == "/readyz":
                self._check(ready)
            else:
                self._reply(404, b"not found\n")

        def _check(self, fn: Callable[[], bool]) -> None:
            ok = fn()
            self._reply(200 if ok else 503, b"ok\n" if ok else b"not ok\n")

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds would drown the log
            pass

    host, port = parse_address(address)

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    server = Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
