"""Start a real etcd and kube-apiserver the way controller-runtime's envtest does.

Temporary data dir, free ports, a generated CA and serving certificate, a ServiceAccount
signing key, RBAC authorization, dual-stack Service ranges, and an admin (system:masters)
client certificate in a kubeconfig that both the `kubernetes` client and kubectl load.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from leifur_dev import gobuild, pki, runtime

# Service cluster IPs never leave the API server, but we keep to documentation ranges anyway.
SERVICE_CIDRS = ("198.51.100.0/24", "2001:db8:ffff::/112")
# Host-side addresses of the netns lab slots (see leifur_dev.netlab); the serving cert covers them.
LAB_HOST_ADDRESSES = ("192.0.2.1", "192.0.2.65", "192.0.2.129", "192.0.2.193")
COMPONENTS = ("etcd", "kube-apiserver")
_REGISTRY = "controlplanes"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver pair rooted at `directory`."""

    directory: Path
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    persistent: bool = False
    binaries: dict[str, Path] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    startup_seconds: float = 0.0

    owns_directory: bool = False  # created by us, so removed whole on stop

    @property
    def name(self) -> str:
        return hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    # -- configuration ------------------------------------------------------------------

    def _pki_dir(self) -> Path:
        return self.directory / "pki"

    def _argv(self, component: str) -> list[str]:
        d, p = self.directory, self._pki_dir()
        if component == "etcd":
            peer = f"http://127.0.0.1:{self.etcd_peer_port}"
            client = f"http://127.0.0.1:{self.etcd_port}"
            return [
                str(self.binaries["etcd"]), "--name=default", f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}", "--unsafe-no-fsync=true", "--log-level=warn",
            ]
        return [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--secure-port={self.apiserver_port}",
            # All addresses: the netns lab reaches us through a veth on the host side.
            "--bind-address=0.0.0.0",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={p}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-key-file={p / 'sa.key'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={','.join(SERVICE_CIDRS)}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # No controller-manager creates default ServiceAccounts, so Pods could not be created.
            "--disable-admission-plugins=ServiceAccount",
            "--profiling=false",
            # Requests of Leifur's ServiceAccounts are audited, so that tests and benchmarks
            # count what each agent asks of the API server from the server's side.
            f"--audit-policy-file={d / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=100",
        ]

    @property
    def audit_log(self) -> Path:
        return self.directory / "audit.log"

    def _write_audit_policy(self) -> None:
        policy = {
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            # ResponseStarted is kept: it is when a watch opens (its ResponseComplete comes minutes later).
            "omitStages": ["RequestReceived"],
            "rules": [
                {"level": "Metadata", "userGroups": ["system:serviceaccounts:leifur-system"]},
                {"level": "None"},
            ],
        }
        (self.directory / "audit-policy.yaml").write_text(yaml.safe_dump(policy))

    def audit_entries(self) -> list[dict]:
        """Every audited request so far (those of ServiceAccounts in leifur-system)."""
        if not self.audit_log.exists():
            return []
        out = []
        for line in self.audit_log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def _write_pki(self) -> None:
        p = self._pki_dir()
        p.mkdir(parents=True, exist_ok=True)
        ca = pki.CertificateAuthority()
        (p / "ca.crt").write_bytes(ca.cert_pem)
        serving = ca.issue(
            "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local"),
            ip_addresses=("127.0.0.1", "::1", "198.51.100.1", *LAB_HOST_ADDRESSES),
            server=True,
        )
        serving.write(p, "apiserver")
        admin = ca.issue("leifur-admin", organizations=("system:masters",))
        admin.write(p, "admin")
        (p / "sa.key").write_bytes(pki.service_account_key())
        (p / "sa.key").chmod(0o600)

    def write_kubeconfig(self, path: Path, server: str | None = None) -> Path:
        """A kubeconfig with the admin identity; `server` overrides the address (e.g. for the lab)."""
        p = self._pki_dir()

        def b64(name: str) -> str:
            return base64.b64encode((p / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "leifur-dev", "cluster": {
                "server": server or self.server, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": "leifur-admin", "user": {
                "client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}}],
            "contexts": [{"name": "leifur-dev", "context": {"cluster": "leifur-dev", "user": "leifur-admin"}}],
            "current-context": "leifur-dev",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    # -- lifecycle ----------------------------------------------------------------------

    def _record(self) -> dict:
        record = {
            "directory": str(self.directory),
            "owns_directory": self.owns_directory,
            "persistent": self.persistent,
            "apiserver_port": self.apiserver_port,
            "etcd_port": self.etcd_port,
            "pids": {n: proc.pid for n, proc in self.processes.items()},
            "binaries": {n: str(b) for n, b in self.binaries.items()},
        }
        if not self.persistent:
            record.update(runtime.owner_record())
        return record

    def _register(self) -> None:
        runtime.Registry(_REGISTRY).write(self.name, self._record())

    def start_component(self, component: str) -> None:
        proc = runtime.spawn(self._argv(component), self.directory / f"{component}.log", self.persistent)
        self.processes[component] = proc
        self._register()

    def stop_component(self, component: str, grace: float = 10.0) -> None:
        proc = self.processes.pop(component, None)
        if proc is not None:
            runtime.stop_child(proc, grace)
            self._register()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll /readyz with the admin identity until the API server says ok."""
        p = self._pki_dir()
        ctx = ssl.create_default_context(cafile=str(p / "ca.crt"))
        ctx.load_cert_chain(str(p / "admin.crt"), str(p / "admin.key"))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s ({last}):\n{self.log_tail('kube-apiserver')}")

    def log_tail(self, component: str, lines: int = 30) -> str:
        path = self.directory / f"{component}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def restart_component(self, component: str) -> None:
        self.stop_component(component)
        self.start_component(component)

    def stop(self, remove: bool = True) -> None:
        for component in reversed(COMPONENTS):
            self.stop_component(component)
        runtime.Registry(_REGISTRY).remove(self.name)
        if remove:
            _remove_files(self.directory, self.owns_directory)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _teardown_record(_name: str, record: dict) -> None:
    binaries = record.get("binaries", {})
    for component in reversed(COMPONENTS):
        pid = record.get("pids", {}).get(component)
        if pid:
            runtime.kill_process(pid, binaries.get(component, component))
    if record.get("directory"):
        _remove_files(Path(record["directory"]), record.get("owns_directory", False))


_OUR_FILES = ("kubeconfig", "etcd.log", "kube-apiserver.log")


def _remove_files(directory: Path, whole: bool) -> None:
    """Remove what start() wrote; the directory itself only if start() created it."""
    if whole:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for sub in ("pki", "etcd"):
        shutil.rmtree(directory / sub, ignore_errors=True)
    for leftover in _OUR_FILES:
        (directory / leftover).unlink(missing_ok=True)


def reap_orphans() -> list[str]:
    """Stop control planes left behind by runs that died without cleaning up."""
    return runtime.Registry(_REGISTRY).reap_orphans(_teardown_record)


def start(directory: Path | None = None, persistent: bool = False, log=None) -> ControlPlane:
    """Build (once) and start etcd and kube-apiserver; return when /readyz says ok.

    persistent=True leaves the servers running after this process exits (``leifur-dev up``);
    otherwise they die with it, and a later run reaps anything left over.
    """
    reap_orphans()
    binaries = {c: gobuild.ensure_built(c, log) for c in COMPONENTS}
    owns = directory is None
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="leifur-cp-"))
    else:
        directory = directory.resolve()
        directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cp = ControlPlane(directory, free_port(), free_port(), free_port(), persistent, binaries,
                      owns_directory=owns)
    try:
        cp._write_pki()
        cp._write_audit_policy()
        cp.write_kubeconfig(cp.kubeconfig)
        cp.start_component("etcd")
        cp.start_component("kube-apiserver")
        cp.wait_ready()
    except BaseException:
        cp.stop(remove=owns)
        raise
    cp.startup_seconds = time.monotonic() - started
    return cp


def stop_directory(directory: Path) -> bool:
    """Stop the control plane registered for `directory` (``leifur-dev down``)."""
    directory = directory.resolve()
    registry = runtime.Registry(_REGISTRY)
    for name, record in registry.records():
        if record.get("directory") == str(directory):
            _teardown_record(name, record)
            registry.remove(name)
            return True
    # Nothing registered (e.g. after a reboot): still remove what `up` wrote there.
    _remove_files(directory, whole=False)
    return False
