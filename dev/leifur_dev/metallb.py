"""The real MetalLB, for tests and benchmarks: a baseline to measure Leifur against and the
source a migration starts from.

Its controller and speaker are built from the Go module `go.universe.tf/metallb` like kube-apiserver
(the wrapper module is tests/controlplane/metallb, the binaries `metallb-controller` and
`metallb-speaker` in gobuild's cache).
Its CRDs are read from that same module as the Go module cache holds it (`config/crd/bases/`),
so that they always match the binary; nothing of MetalLB is copied into this repository.

The controller runs as a child process against a kubeconfig, without its webhooks, watching the
metallb.io objects of one namespace; with a `loadBalancerClass` it touches no other Service. Speakers
run in the netns lab's node namespaces, each with the Pod object a kubelet would have made for it
(their memberlist peers are found through those Pods). `World` is one test's MetalLB.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Self

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur_dev import gobuild, runtime, secretvolume
from leifur_dev.cluster import Cluster, wait_crd_established, wait_for
from leifur_dev.controlplane import free_port

COMPONENT = "metallb-controller"
SPEAKER = "metallb-speaker"
MODULE = "go.universe.tf/metallb"
CRD_SUBDIR = "config/crd/bases"
GROUP = "metallb.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
POOLS = "ipaddresspools"
L2ADVERTISEMENTS = "l2advertisements"
# What MetalLB's programs write in their namespace: each one's ConfigurationState, and a speaker's
# ServiceL2Status for each Service it announces (owned by its Pod).
STATES = ("configurationstates", "servicel2statuses")
# What MetalLB's controller writes on a Service it numbered (v0.15: the metallb.io prefix).
ALLOCATED_FROM_POOL = f"{GROUP}/ip-allocated-from-pool"
# As MetalLB's manifests name them: the speakers' Pod labels (its --ml-labels), the memberlist
# Secret and its key (internal/k8s MLSecretKeyName), the speaker's metrics port.
SPEAKER_LABELS = {"app": "metallb", "component": "speaker"}
MEMBERLIST_SECRET = "memberlist"
MEMBERLIST_KEY = "secretkey"
SPEAKER_PORT = 7472


def selector(labels: dict[str, str]) -> str:
    """A label selector matching exactly these labels, as --ml-labels takes it."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


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


class MetalLBProcess(runtime.ChildProcess):
    """One of MetalLB's programs as a child process of ours: the flags both take, its metrics
    port, its readiness, its memory; stopped or killed by its own pid only."""

    what = "metallb"

    def __init__(self, component: str, kubeconfig: Path, log_path: Path, namespace: str, port: int,
                 own: list[str], extra: tuple[str, ...], *, lb_class: str | None, log_level: str,
                 binary: Path | None, metrics_host: str = "127.0.0.1") -> None:
        self.binary = binary or gobuild.ensure_built(component)
        self.port = port
        self.metrics_host = metrics_host
        self.log_path = log_path
        self.namespace = namespace
        self.lb_class = lb_class
        self.argv = [str(self.binary), f"--kubeconfig={kubeconfig}", f"--namespace={namespace}", *own,
                     f"--port={port}", f"--log-level={log_level}"]
        if lb_class:
            self.argv.append(f"--lb-class={lb_class}")
        self.argv += list(extra)
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        """What is executed: argv itself, unless a subclass runs it somewhere else."""
        return self.argv

    def start(self) -> Self:
        """Start it (it dies with us: PR_SET_PDEATHSIG); stop() or kill() end it by its pid only."""
        self.proc = runtime.spawn(self.command(), self.log_path, persistent=False)
        return self

    def metrics(self) -> str:
        """Its /metrics (plain HTTP, no authentication: MetalLB's own port)."""
        with urllib.request.urlopen(f"http://{self.metrics_host}:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def wait_ready(self, timeout: float = 60, interval: float = 0.2) -> Self:
        """Until its metrics port answers and it has loaded its configuration (MetalLB's own
        `metallb_k8s_client_config_loaded_bool`, 1 also when the namespace holds no pool yet):
        from then on it acts on Services. Pools created before start() are in that first load."""
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                text = self.metrics()
            except OSError:
                return False
            return any(line.startswith("metallb_k8s_client_config_loaded_bool") and line.rstrip().endswith(" 1")
                       for line in text.splitlines())

        wait_for(ready, timeout, interval=interval, what=f"{self.what} loaded its configuration")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> Self:
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class MetalLBController(MetalLBProcess):
    """MetalLB's controller (the IP allocator), run as a child process of ours.

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
    - no `--ml-secret-name`: it would make the speakers' memberlist Secret, owned by its Deployment,
      which does not exist here; `World` makes that Secret instead.
    """

    what = "metallb-controller"

    def __init__(self, kubeconfig: Path, log_path: Path, namespace: str, *extra: str,
                 lb_class: str | None = None, log_level: str = "info", binary: Path | None = None) -> None:
        super().__init__(COMPONENT, kubeconfig, log_path, namespace, free_port(),
                         ["--webhook-mode=disabled", "--disable-cert-rotation"], extra,
                         lb_class=lb_class, log_level=log_level, binary=binary)

    def addresses_in_use(self) -> int:
        """How many addresses its allocator holds, over all pools (its own
        `metallb_allocator_addresses_in_use_total`): after a restart, how far it has reloaded."""
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in self.metrics().splitlines()
                       if line.startswith("metallb_allocator_addresses_in_use_total{")))


class MetalLBSpeaker(MetalLBProcess):
    """MetalLB's speaker (the announcer; layer 2 here), run in a node's network namespace as its
    DaemonSet Pod would run on the node's host network.

    Flags, from v0.15.3's speaker/main.go (each also has a METALLB_* variable; flags are clearer):
    - `--node-name`: the Node it announces for; its memberlist name, matched against EndpointSlices.
    - `--pod-name`: its own Pod, read at start-up (the owner of the ServiceL2Status it writes); the
      start fails without it.
    - `--host`, `--port`: its metrics listener, on the node's address so that the host reads it.
    - `--ml-bindaddr`, `--ml-labels`: memberlist on the node's address (port 7946); its peers are
      the podIPs of the Pods in `--namespace` matching the labels, listed once at start-up and
      every 5 minutes. Without both, memberlist is off and every node counts as a live speaker.
    - `--ml-secret-key-path`: the directory where the memberlist Secret is mounted (`secretkey`).
    """

    what = "metallb-speaker"

    def __init__(self, kubeconfig: Path, log_path: Path, namespace: str, *extra: str, netns: str,
                 node_name: str, pod_name: str, address: str, secret_dir: Path,
                 labels: dict[str, str] | None = None, lb_class: str | None = None,
                 log_level: str = "info", binary: Path | None = None) -> None:
        self.netns = netns
        self.node_name = node_name
        self.address = address
        labels = SPEAKER_LABELS if labels is None else labels
        super().__init__(SPEAKER, kubeconfig, log_path, namespace, SPEAKER_PORT, [
            f"--node-name={node_name}", f"--pod-name={pod_name}", f"--host={address}",
            f"--ml-bindaddr={address}", f"--ml-labels={selector(labels)}", f"--ml-secret-key-path={secret_dir}",
        ], extra, lb_class=lb_class, log_level=log_level, binary=binary, metrics_host=address)

    def command(self) -> list[str]:
        # `ip netns exec` execs the speaker: the pid we hold is the speaker's.
        return ["ip", "netns", "exec", self.netns, *self.argv]


def l2_owner(node_names: list[str], ip: str) -> str:
    """The node whose speaker announces `ip` in layer 2 mode, among the nodes with a live speaker
    (and, for externalTrafficPolicy Local, a ready endpoint): MetalLB v0.15's rule in
    speaker/layer2_controller.go ShouldAnnounce, the lowest sha256 of "node#ip". Its netns test
    checks it against the real speakers."""
    return min(node_names, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest())


def speaker_pod_name(node_name: str) -> str:
    return f"speaker-{node_name}"


def speaker_pod(name: str, node_name: str, labels: dict[str, str]) -> dict:
    """A speaker's DaemonSet Pod as the scheduler leaves it: bound to its node, on the host network."""
    image = f"quay.io/metallb/speaker:{gobuild.component_version(SPEAKER)}"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node_name, "hostNetwork": True, "containers": [{"name": "speaker", "image": image}]}}


def running_status(address: str) -> dict:
    """What a kubelet reports for a host-network Pod whose container runs: the node's address as its IP."""
    return {"status": {"phase": "Running", "hostIP": address, "hostIPs": [{"ip": address}],
                       "podIP": address, "podIPs": [{"ip": address}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class World:
    """One test's MetalLB: its configuration namespace, its class, its controller(s) and speakers.
    Each test gets a class of its own, so that MetalLB never touches a Service that Leifur's
    controllers (class unset, or theirs) handle in the same session, nor they its Services."""

    def __init__(self, api_client: client.ApiClient, kubeconfig: Path, tmp: Path) -> None:
        self.cluster = Cluster(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.kubeconfig = kubeconfig
        self.tmp = tmp
        suffix = uuid.uuid4().hex[:8]
        self.ns = f"mlb-{suffix}"
        self.lb_class = f"{GROUP}/test-{suffix}"
        self.cluster.ensure_namespace(self.ns)
        self.controllers: list[MetalLBController] = []
        self.speakers: dict[str, MetalLBSpeaker] = {}
        self.namespaces: list[str] = []

    def controller(self) -> MetalLBController:
        c = MetalLBController(self.kubeconfig, self.tmp / f"metallb-{len(self.controllers) + 1}.log",
                              self.ns, lb_class=self.lb_class, log_level="debug")
        self.controllers.append(c)
        return c.start().wait_ready()

    def memberlist_secret(self) -> bytes:
        """The speakers' memberlist key, made once as MetalLB's controller makes it (16 random bytes,
        unpadded base64) and kept in the Secret its manifests mount into every speaker."""
        try:
            data = self.cluster.core.read_namespaced_secret(MEMBERLIST_SECRET, self.ns).data
            return base64.b64decode(data[MEMBERLIST_KEY])
        except ApiException as e:
            if e.status != 404:
                raise
        key = base64.b64encode(os.urandom(16)).rstrip(b"=")
        self.cluster.core.create_namespaced_secret(self.ns, {
            "metadata": {"name": MEMBERLIST_SECRET}, "data": {MEMBERLIST_KEY: base64.b64encode(key).decode()}})
        return key

    def speaker_pod(self, node_name: str, address: str) -> str:
        """Create the speaker's Pod on `node_name` and report it running with `address`, as the
        scheduler and the kubelet would; its name. Every speaker's Pod must exist before the
        speakers start: each lists its peers' Pods once at start-up (then every 5 minutes)."""
        name = speaker_pod_name(node_name)
        self.cluster.recreate_pod(self.ns, speaker_pod(name, node_name, SPEAKER_LABELS))
        self.cluster.core.patch_namespaced_pod_status(name, self.ns, running_status(address))
        return name

    def speaker(self, kubeconfig: Path, netns: str, node_name: str, address: str) -> MetalLBSpeaker:
        """Start the speaker of `node_name` inside `netns` (its Pod made first by speaker_pod), the
        memberlist Secret mounted as the kubelet would; started, not yet ready."""
        secret_dir = self.tmp / f"memberlist-{node_name}"
        secretvolume.project(secret_dir, {MEMBERLIST_KEY: self.memberlist_secret()})
        s = MetalLBSpeaker(kubeconfig, self.tmp / f"speaker-{node_name}.log", self.ns, netns=netns,
                           node_name=node_name, pod_name=speaker_pod_name(node_name), address=address,
                           secret_dir=secret_dir, lb_class=self.lb_class, log_level="debug")
        self.speakers[node_name] = s
        return s.start()

    def start_speakers(self, kubeconfig: Path, nodes: dict[str, tuple[str, str]]) -> None:
        """A speaker on every node (name -> (netns, address)), until all are ready. Every Pod is
        made first: each speaker lists its memberlist peers' Pods once, when it starts."""
        for name, (_netns, address) in nodes.items():
            self.speaker_pod(name, address)
        for name, (netns, address) in nodes.items():
            self.speaker(kubeconfig, netns, name, address)
        for s in self.speakers.values():
            s.wait_ready()

    def announcing_nodes(self, service: str, namespace: str | None = None) -> list[str]:
        """The nodes MetalLB's ServiceL2Status objects say announce `service` (speakers write them)."""
        namespace = namespace or self.ns
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, "servicel2statuses")["items"]
        return sorted(i.get("status", {}).get("node", "") for i in items
                      if i.get("status", {}).get("serviceName") == service
                      and i["status"].get("serviceNamespace") == namespace)

    def create(self, body: dict) -> dict:
        plural = {"IPAddressPool": POOLS, "L2Advertisement": L2ADVERTISEMENTS}[body["kind"]]
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, body)

    def svc(self, name: str, lb_class: str | None = "", **spec) -> dict:
        """A LoadBalancer Service in MetalLB's namespace, of its class unless told otherwise."""
        cls = self.lb_class if lb_class == "" else lb_class
        if cls:
            spec["loadBalancerClass"] = cls
        return self.cluster.create_service(self.ns, name, **spec)

    def ips(self, name: str) -> list[str]:
        return self.cluster.ips(self.ns, name)

    def wait_ips(self, name: str, n: int = 1, timeout: float = 60) -> list[str]:
        return wait_for(lambda: len(ips := self.ips(name)) == n and ips, timeout, what=f"{n} IP(s) on {name}")

    def namespace(self, suffix: str, labels: dict[str, str] | None = None) -> str:
        """Another namespace for the test's Services, removed with the rest."""
        name = f"{self.ns}-{suffix}"
        self.cluster.ensure_namespace(name, labels)
        self.namespaces.append(name)
        return name

    def delete_services(self, timeout: float = 30) -> None:
        """Delete every Service of the test, and wait until they are gone (a controller still
        running releases them), or give up quietly: teardown strips what is left."""
        for ns in (self.ns, *self.namespaces):
            for s in self.cluster.core.list_namespaced_service(ns).items:
                self.cluster.delete_service(ns, s.metadata.name)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not any(self.cluster.core.list_namespaced_service(ns).items
                                     for ns in (self.ns, *self.namespaces)), timeout, what="Services deleted")

    def processes(self) -> list[MetalLBProcess]:
        return [*self.speakers.values(), *self.controllers]

    def teardown(self) -> None:
        for p in self.processes():
            p.stop()
        for ns in (self.ns, *self.namespaces):
            for s in self.cluster.core.list_namespaced_service(ns).items:
                self.cluster.delete_service(ns, s.metadata.name)
                with contextlib.suppress(ApiException):  # a finalizer no controller is left to remove
                    self.cluster.core.patch_namespaced_service(s.metadata.name, ns, {"metadata": {"finalizers": None}},
                                                               _content_type="application/merge-patch+json")
        for plural in (POOLS, L2ADVERTISEMENTS, *STATES):
            with contextlib.suppress(ApiException):
                self.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, self.ns, plural)
        # Nothing else deletes a namespace's contents here (no controller-manager): the speakers'
        # Pods and Secret would outlive the test.
        with contextlib.suppress(ApiException):
            self.cluster.core.delete_collection_namespaced_pod(self.ns, grace_period_seconds=0)
        with contextlib.suppress(ApiException):
            self.cluster.core.delete_namespaced_secret(MEMBERLIST_SECRET, self.ns)
        for ns in (self.ns, *self.namespaces):
            with contextlib.suppress(ApiException):
                self.cluster.core.delete_namespace(ns)
