"""The metrics port's TLS certificate: from a directory (tls.crt and tls.key, as cert-manager
writes them into a Secret), or self-signed in memory at start-up (made by a child process:
leifur.kube.selfsigned).

Nothing is written to disk: the agent's root filesystem is read-only, and a private key in a
file is one more thing to protect. Python's ssl module loads certificates only from paths, so
the generated pair goes through an anonymous memory file (memfd), opened by its /proc path and
closed at once.
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("leifur.certificate")

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
SELF_SIGNED_DAYS = 365
# PKCS #8, as the child writes the key after the certificate.
_KEY_BEGIN = b"-----BEGIN PRIVATE KEY-----"
# Seconds the child that makes it may take (it starts an interpreter; about 0.2 s on an idle machine).
SELF_SIGNED_TIMEOUT = 60.0
# How often the files are looked at for a renewal (cert-manager renews them in place, and the
# kubelet updates a mounted Secret about a minute later).
RELOAD_CHECK_SECONDS = 10.0


class CertificateProblem(Exception):
    """The certificate directory cannot be served from: said at start-up, in the flag's words."""


def self_signed(names: Sequence[str], days: int = SELF_SIGNED_DAYS) -> tuple[bytes, bytes]:
    """An ECDSA P-256 key and a certificate for it, valid `days`, for `names` (host names or IP
    addresses; the first is the subject); both PEM.

    Made by a child process (leifur.kube.selfsigned): loading cryptography would keep some 10 MB
    resident in this process for the rest of its life, for one use at start-up. The pair comes
    back through a pipe; nothing touches the disk."""
    argv = [sys.executable, "-m", "leifur.kube.selfsigned", "--days", str(days), "--", *names]
    try:
        out = subprocess.run(argv, capture_output=True, check=True, timeout=SELF_SIGNED_TIMEOUT).stdout
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"could not make a self-signed certificate: {e.stderr.decode(errors='replace')}") from e
    cert, sep, key = out.partition(_KEY_BEGIN)
    if not sep or not cert.startswith(b"-----BEGIN CERTIFICATE-----"):
        raise RuntimeError("could not make a self-signed certificate: the child process wrote no PEM pair")
    return cert, sep + key


def _server_context() -> ssl.SSLContext:
    # The defaults of a server context: TLS 1.2 or newer, no client certificates asked for
    # (callers authenticate with a bearer token).
    return ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)


def context_from_memory(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context for a certificate and key held in memory only."""
    ctx = _server_context()
    fd = os.memfd_create("leifur-metrics-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert_pem + key_pem)
        # The certificate file may hold the key too; both are read here, then the file is gone.
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx


def context_from_files(directory: Path) -> ssl.SSLContext:
    ctx = _server_context()
    ctx.load_cert_chain(directory / CERT_FILE, directory / KEY_FILE)
    return ctx


class ServingCertificate:
    """The TLS context for each new connection. From a directory, the files are read again when they
    change, so that a renewed certificate is served without a restart; a pair that does not load
    (half-written, mismatched) is logged and the previous one kept."""

    def __init__(self, cert_dir: str | None, names: Sequence[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(cert_dir) if cert_dir else None
        self._clock = clock
        self._lock = threading.Lock()
        if self.directory is None:
            self._context = context_from_memory(*self_signed(names))
            self._stamp: tuple[tuple[int, int, int], ...] = ()
        else:
            try:
                self._stamp = self._files_stamp()
                self._context = context_from_files(self.directory)
            except (OSError, ssl.SSLError) as e:
                raise CertificateProblem(f"--metrics-cert-dir {cert_dir}: cannot load {CERT_FILE} and {KEY_FILE}: "
                                         f"{e}") from e
        self._checked = clock()

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...]:
        assert self.directory is not None
        # A mounted Secret changes by swapping a symlink: stat follows it to the new file.
        out = []
        for name in (CERT_FILE, KEY_FILE):
            st = (self.directory / name).stat()
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def context(self) -> ssl.SSLContext:
        if self.directory is None:
            return self._context
        with self._lock:
            now = self._clock()
            if now - self._checked >= RELOAD_CHECK_SECONDS:
                self._checked = now
                self._reload()
            return self._context

    def _reload(self) -> None:
        assert self.directory is not None
        try:
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return
            self._context = context_from_files(self.directory)
            self._stamp = stamp
            log.info("serving the renewed certificate from %s", self.directory)
        except (OSError, ssl.SSLError) as e:
            log.warning("could not load the certificate in %s (%s): serving the previous one", self.directory, e)
