"""The real MetalLB, for tests and benchmarks: a baseline to measure Leifur against and the
source a migration starts from.

Its controller is built from the Go module `go.universe.tf/metallb` like kube-apiserver (the
wrapper module is tests/controlplane/metallb, the binary `metallb-controller` in gobuild's cache).
Its CRDs are read from that same module as the Go module cache holds it (`config/crd/bases/`),
so that they always match the binary; nothing of MetalLB is copied into this repository.

The controller runs as a child process against a kubeconfig, without its webhooks, watching the
metallb.io objects of one namespace; with a `loadBalancerClass` it touches no other Service.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur_dev import gobuild, runtime
from leifur_dev.cluster import wait_crd_established, wait_for
from leifur_dev.controlplane import free_port

COMPONENT = "metallb-controller"
MODULE = "go.universe.tf/metallb"
CRD_SUBDIR = "config/crd/bases"
GROUP = "metallb.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
POOLS = "ipaddresspools"
L2ADVERTISEMENTS = "l2advertisements"
# What MetalLB's controller writes on a Service it numbered (v0.15: the metallb.io prefix).
ALLOCATED_FROM_POOL = f"{GROUP}/ip-allocated-from-pool"


def module_dir() -> Path:
    """MetalLB's module source, as the Go module cache holds it (downloaded on first use).

    The version is the wrapper module's (tests/controlplane/metallb/go.mod), the one the
    controller binary is built from."""
    src = gobuild.source_root() / "metallb"
    out = subprocess.run([gobuild._go(), "mod", "download", "-json", MODULE], cwd=src,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"go mod download {MODULE} failed:\n{out.stderr}{out.stdout}")
    info = json.loads(out.stdout)
    if info.get("Error"):
        raise RuntimeError(f"go mod download {MODULE}: {info['Error']}")
    return Path(info["Dir"])


def crd_files() -> list[Path]:
    """MetalLB's CRD manifests (IPAddressPool, L2Advertisement, BGPPeer, ...), from its module."""
    files = sorted((module_dir() / CRD_SUBDIR).glob("*.yaml"))
    if not files:
        raise RuntimeError(f"no CRDs under {module_dir() / CRD_SUBDIR}")
    return files


def crds() -> list[dict]:
    """The CRD objects, as the module's manifests define them."""
    return [doc for path in crd_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def install_crds(api_client: client.ApiClient) -> list[str]:
    """Create (or update) MetalLB's CRDs and wait until they are served; returns their names."""
    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for body in crds():
        name = body["metadata"]["name"]
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as e:
            if e.status != 409:
                raise
            body["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(name).metadata.resource_version
            ext.replace_custom_resource_definition(name, body)
        names.append(name)
    for name in names:
        wait_crd_established(api_client, name)
    return names


def pool(name: str, namespace: str, addresses: list[str], **spec) -> dict:
    """A metallb.io/v1beta1 IPAddressPool (spec fields as MetalLB spells them, e.g. autoAssign)."""
    return {"apiVersion": API_VERSION, "kind": "IPAddressPool", "metadata": {"name": name, "namespace": namespace},
            "spec": {"addresses": addresses, **spec}}


def l2_advertisement(name: str, namespace: str, **spec) -> dict:
    """A metallb.io/v1beta1 L2Advertisement (empty spec: every pool, every node)."""
    return {"apiVersion": API_VERSION, "kind": "L2Advertisement", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


class MetalLBController(runtime.ChildProcess):
    """MetalLB's controller (the IP allocator; no speaker), run as a child process of ours.

    Flags, from v0.15.3's controller/main.go:
    - `--kubeconfig`: controller-runtime's flag (ctrl.GetConfigOrDie); there is no in-cluster config here.
    - `--namespace`: where it reads its configuration (IPAddressPool, L2Advertisement, ...) and writes
      its ConfigurationState; everywhere else it only reads Services (and writes their status).
    - `--webhook-mode=disabled`: no validating webhook server (it would need a Service and a
      certificate the API server trusts). `--disable-cert-rotation` as well: the rotator is only
      started with webhooks enabled, but it would otherwise hold back the metrics port until a
      webhook Secret exists.
    - `--lb-class`: it then handles only Services of that `spec.loadBalancerClass` and leaves all
      others alone (Leifur's, by default those with none).
    - `--port`: its metrics port, free on this machine (7472 by default, on every address).
    - no `--ml-secret-name`: the memberlist Secret is only for speakers; the controller need not make it.
    """

    what = "metallb-controller"

    def __init__(self, kubeconfig: Path, log_path: Path, namespace: str, *extra: str,
                 lb_class: str | None = None, log_level: str = "info", binary: Path | None = None) -> None:
        self.binary = binary or gobuild.ensure_built(COMPONENT)
        self.port = free_port()
        self.log_path = log_path
        self.namespace = namespace
        self.lb_class = lb_class
        self.argv = [
            str(self.binary), f"--kubeconfig={kubeconfig}", f"--namespace={namespace}",
            "--webhook-mode=disabled", "--disable-cert-rotation", f"--port={self.port}",
            f"--log-level={log_level}",
        ]
        if lb_class:
            self.argv.append(f"--lb-class={lb_class}")
        self.argv += list(extra)
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> MetalLBController:
        """Start it (it dies with us: PR_SET_PDEATHSIG); stop() or kill() end it by its pid only."""
        self.proc = runtime.spawn(self.argv, self.log_path, persistent=False)
        return self

    def metrics(self) -> str:
        """Its /metrics (plain HTTP, no authentication: MetalLB's own port)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def wait_ready(self, timeout: float = 60) -> MetalLBController:
        """Until its metrics port answers and it has loaded its configuration (MetalLB's own
        `metallb_k8s_client_config_loaded_bool`, 1 also when the namespace holds no pool yet):
        from then on it numbers Services. Pools created before start() are in that first load."""
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                text = self.metrics()
            except OSError:
                return False
            return any(line.startswith("metallb_k8s_client_config_loaded_bool") and line.rstrip().endswith(" 1")
                       for line in text.splitlines())

        wait_for(ready, timeout, interval=0.2, what=f"{self.what} loaded its configuration")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> MetalLBController:
        self.stop()
        return self.start()

    def peak_rss_bytes(self) -> int | None:
        """Its peak resident memory so far (VmHWM), or None once it has exited."""
        kib = runtime.status_kib(self.proc.pid, "VmHWM") if self.alive() and self.proc else None
        return None if kib is None else kib * 1024

    def rss_bytes(self) -> int | None:
        """Its resident memory now (VmRSS), or None once it has exited."""
        kib = runtime.status_kib(self.proc.pid, "VmRSS") if self.alive() and self.proc else None
        return None if kib is None else kib * 1024

    def log_tail(self, lines: int = 40, width: int = 400) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(line[:width] for line in self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> MetalLBController:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
