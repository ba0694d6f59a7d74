"""The whole thing on one machine: control plane + netns LAN + controller + one agent per node.

Used by the agent's netns tests, the benchmarks and the demo. Node objects are created in the
API for every lab node (there is no kubelet): named after the lab, with the node namespace's
address as InternalIP, so agents find each other for heartbeats. EndpointSlices are written by
hand for the same reason (no endpoint controller), and a DNAT rule in each node namespace
stands in for kube-proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur.model.settings import AgentSettings
from leifur_dev import gobuild, netlab, secretvolume
from leifur_dev.cluster import (
    REPO,
    Cluster,
    ControllerProcess,
    ServedProcess,
    install_crds,
    metrics_reader_token,
    service_account_kubeconfig,
    wait_for,
)
from leifur_dev.controlplane import ControlPlane
from leifur_dev.flaky import FlakyProxy

AGENT_PORT = AgentSettings().metrics_port
AGENT_HEALTH = AgentSettings().health_address
SERVER_PORT = netlab.SERVER_PORT


class AgentProcess(ServedProcess):
    """The real leifur-agent inside one node namespace."""

    what = "agent"

    def __init__(self, stack: Stack, host: netlab.Host, node_name: str, extra: tuple[str, ...],
                 reuse_credentials: bool = False) -> None:
        self.stack = stack
        self.reuse_credentials = reuse_credentials
        self.host = host
        self.node_name = node_name
        self.extra = extra
        self.log_path = stack.workdir / f"agent-{host.name}.log"
        self.proc: subprocess.Popen | None = None
        self.token = stack.metrics_token

    def start(self) -> AgentProcess:
        kubeconfig = self.stack.workdir / f"kubeconfig-{self.host.name}"
        if not (self.reuse_credentials and kubeconfig.exists()):
            kubeconfig = self.stack.agent_kubeconfig(self.host)
        key_dir = self.stack.key_dir(self.host)
        if not key_dir.exists():
            secretvolume.project(key_dir, self.stack.heartbeat_keys)
        args = ["--kubeconfig", str(kubeconfig),
                "--node-name", self.node_name, "--metrics-address", f"0.0.0.0:{AGENT_PORT}",
                "--heartbeat-key-dir", str(key_dir), "--log-level", "debug", *self.stack.agent_args, *self.extra]
        log = open(self.log_path, "a")  # noqa: SIM115 - the child keeps it
        if self.stack.agent_command is None:
            self.proc = self.stack.lab.popen(self.host.netns, [sys.executable, "-m", "leifur.agent.main", *args],
                                             stdout=log, stderr=subprocess.STDOUT)
        else:
            # It joins the node's namespace itself (the image: podman run --network ns:...).
            self.proc = self.stack.lab.popen(None, [*self.stack.agent_command(self.host), *args],
                                             stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def base_url(self) -> str:
        return f"https://{self.host.ip4}:{AGENT_PORT}"

    def get_health(self, path: str) -> tuple[int, str]:
        """GET `path` on the agent's health port as the kubelet does: plain HTTP, no token, from the
        node's own network namespace (the port is on its loopback, by default)."""
        code = ("import sys, urllib.request, urllib.error\n"
                "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
                "except urllib.error.HTTPError as e:\n r = e\n"
                "print(r.status); print(r.read().decode(), end='')\n")
        res = self.stack.lab.run(self.host.netns, [sys.executable, "-c", code, f"http://{AGENT_HEALTH}{path}"],
                                 timeout=15)
        status, _, body = res.stdout.partition("\n")
        return int(status), body

    def signal(self, sig: int) -> None:
        # The agent is the child of `ip netns exec`, which execs it: the pid is the agent's.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class Stack:
    def __init__(self, control_plane: ControlPlane, api_client: client.ApiClient, lab: netlab.Lab, workdir: Path,
                 agent_args: tuple[str, ...] = (), namespace: str = "leifur-system",
                 controller_args: tuple[str, ...] = (),
                 agent_rbac: Path | None = REPO / "deploy" / "agent" / "rbac.yaml") -> None:
        """`namespace` (system_namespace) is where the programs run: their ServiceAccounts, the
        agents' Pods, the Lease. `agent_rbac` is applied at start() unless None (when something
        else, such as the Helm chart, installed the agent's identity)."""
        self.cp = control_plane
        self.system_namespace = namespace
        self.agent_rbac = agent_rbac
        self.api_client = api_client
        self.lab = lab
        self.workdir = workdir
        self.agent_args = agent_args
        self.controller_args = controller_args
        # How an agent is started, given its node, if not from this interpreter inside the node's
        # namespace: a command that joins the namespace itself (leifur_dev.image.agent_command).
        self.agent_command: Callable[[netlab.Host], list[str]] | None = None
        # What the Secret leifur-heartbeat-key holds; each node's kubelet projects it (key_dir).
        self.heartbeat_keys = {names.HEARTBEAT_KEY_CURRENT: os.urandom(names.HEARTBEAT_KEY_BYTES)}
        self.cluster = Cluster(api_client)
        self.core = client.CoreV1Api(api_client)
        # What the stack reads the programs' metrics with, as Prometheus would (deploy/monitoring's
        # reader); also in a file, for people exploring the demo with curl.
        self.metrics_token = metrics_reader_token(api_client)
        (workdir / "metrics-token").write_text(self.metrics_token)
        (workdir / "metrics-token").chmod(0o600)
        self.kubeconfig = control_plane.write_kubeconfig(
            workdir / "kubeconfig-lan", server=f"https://{lab.host_ip}:{control_plane.apiserver_port}")
        # Where the controller and the agents reach the API server (use_proxy puts a proxy between).
        self.api_port = control_plane.apiserver_port
        self.controller_kubeconfig = control_plane.kubeconfig
        self.proxy: FlakyProxy | None = None
        self.controller: ControllerProcess | None = None
        self.agents: dict[str, AgentProcess] = {}
        self.pools: list[str] = []
        self.ads: list[str] = []
        self.namespaces: list[str] = []
        install_crds(api_client)

    # -- names ------------------------------------------------------------------------------------

    def node_name(self, host: netlab.Host) -> str:
        return f"{netlab.PREFIX}-{self.lab.id}-{host.name}"

    def host_of(self, node_name: str) -> netlab.Host:
        return next(h for h in self.lab.nodes if self.node_name(h) == node_name)

    def key_dir(self, host: netlab.Host) -> Path:
        """Where `host`'s agent finds the heartbeat keys (the Secret's volume on that node)."""
        return self.workdir / f"heartbeat-key-{host.name}"

    def lan_ip(self, offset: int, version: int = 4) -> str:
        """An address of the lab's subnet that no host uses (offsets 30..59 are free)."""
        return self.lab.lan_ip(offset, version)

    # -- bring-up ---------------------------------------------------------------------------------

    def start(self, agents: bool = True, controller: bool = True, nodes: bool = True) -> Stack:
        """`nodes=False`: the Node objects exist already (a first start() made them for something
        else, such as MetalLB's speakers, which must not see their Node go away)."""
        self.cluster.ensure_namespace(self.system_namespace)
        if self.agent_rbac is not None:
            self.apply(self.agent_rbac)
        for host in self.lab.nodes if nodes else []:
            self.create_node(host)
        if controller:
            self.controller = ControllerProcess(self.controller_kubeconfig, self.workdir / "controller.log",
                                                *self.controller_args, token=self.metrics_token,
                                                identity=f"ctl-{self.lab.id}",
                                                lease_namespace=self.system_namespace)
            self.controller.start().wait_ready()
        if agents:
            for host in self.lab.nodes:
                self.start_agent(host)
            for a in self.agents.values():
                a.wait_ready()
        return self

    def create_node(self, host: netlab.Host, labels: dict | None = None) -> None:
        name = self.node_name(host)
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}}
        with contextlib.suppress(ApiException):
            self.core.delete_node(name)
        self.core.create_node(body)
        self.core.patch_node_status(name, {"status": {"addresses": [
            # Heartbeats go to the InternalIP: over the backplane when the lab has one.
            {"type": "InternalIP", "address": host.backplane4 or host.ip4},
            {"type": "Hostname", "address": host.name}]}})

    def use_proxy(self, proxy: FlakyProxy) -> None:
        """Send the controller's and the agents' API traffic through `proxy` (before start()). The
        stack stops it last: the controller needs it to release its finalizers on the way out."""
        self.proxy = proxy
        self.api_port = proxy.port
        self.controller_kubeconfig = self.cp.write_kubeconfig(self.workdir / "kubeconfig-controller",
                                                              server=f"https://127.0.0.1:{proxy.port}")

    def apply(self, path: Path) -> None:
        kubectl = str(gobuild.ensure_built("kubectl"))
        subprocess.run([kubectl, "--kubeconfig", str(self.cp.kubeconfig), "apply", "--server-side", "-f", str(path)],
                       check=True, capture_output=True, timeout=60)

    def agent_kubeconfig(self, host: netlab.Host) -> Path:
        """Credentials of the agent's DaemonSet Pod on `host`: the leifur-agent ServiceAccount, its token
        bound to a Pod object on that node (so it carries the node name the admission policy checks)."""
        pod = f"agent-{self.node_name(host)}"
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
                "spec": {"nodeName": self.node_name(host), "serviceAccountName": names.AGENT_NAME,
                         "containers": [{"name": "agent", "image": "leifur:dev"}]}}
        self.cluster.recreate_pod(self.system_namespace, body)
        return service_account_kubeconfig(
            self.api_client, f"https://{self.lab.host_ip}:{self.api_port}",
            self.cp.directory / "pki" / "ca.crt", self.system_namespace, names.AGENT_NAME,
            self.workdir / f"kubeconfig-{host.name}", bound_pod=pod)

    def label_node(self, host: netlab.Host, labels: dict) -> None:
        self.core.patch_node(self.node_name(host), {"metadata": {"labels": labels}})

    def start_agent(self, host: netlab.Host, *extra: str, reuse_credentials: bool = False) -> AgentProcess:
        agent = AgentProcess(self, host, self.node_name(host), extra, reuse_credentials)
        self.agents[host.name] = agent.start()
        return agent

    def pool(self, name: str, addresses: list[str], **spec) -> str:
        full = f"{self.lab.id}-{name}"
        self.cluster.create_pool(full, addresses, **spec)
        self.pools.append(full)
        return full

    def advertisement(self, name: str, **spec) -> str:
        full = f"{self.lab.id}-{name}"
        body = {"apiVersion": names.API_VERSION, "kind": "L2Advertisement", "metadata": {"name": full},
                "spec": spec}
        self.cluster.custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.L2ADVERTISEMENTS, body)
        self.ads.append(full)
        return full

    def namespace(self, name: str) -> str:
        full = f"{self.lab.id}-{name}"
        self.cluster.ensure_namespace(full)
        self.namespaces.append(full)
        return full

    def endpoints(self, ns: str, service: str, hosts: list[netlab.Host], ready: bool = True) -> None:
        """The EndpointSlice an endpoint controller would write: one endpoint per host."""
        body = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-lab", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [h.ip4], "nodeName": self.node_name(h), "conditions": {"ready": ready}}
                          for h in hosts],
            "ports": [{"name": "p80", "port": SERVER_PORT, "protocol": "TCP"}],
        }
        api = client.DiscoveryV1Api(self.api_client)
        try:
            api.replace_namespaced_endpoint_slice(f"{service}-lab", ns, body)
        except ApiException as e:
            if e.status != 404:
                raise
            api.create_namespaced_endpoint_slice(ns, body)

    def service(self, ns: str, name: str, endpoint_hosts: list[netlab.Host] | None = None, **kw) -> str:
        """A LoadBalancer Service with endpoints on `endpoint_hosts` (all nodes by default); its first IP."""
        self.cluster.create_service(ns, name, **kw)
        self.endpoints(ns, name, self.lab.nodes if endpoint_hosts is None else endpoint_hosts)
        return wait_for(lambda: (ips := self.cluster.ips(ns, name)) and ips[0], 30, what=f"an IP for {ns}/{name}")

    # -- the data path ----------------------------------------------------------------------------

    def serve(self, ip: str, port: int = 80) -> None:
        """On every node: a TCP server answering its node's name, and kube-proxy's DNAT of ip:port to it."""
        self.lab.serve(ip, port)

    def connect(self, ip: str, port: int = 80, timeout: float = 2, source: netlab.Host | None = None) -> str | None:
        """From the client namespace (or `source`'s, such as `lab.remote` behind the router): the name
        of the node that served a TCP connection, or None."""
        return self.lab.connect(ip, port, timeout, source)

    def probe(self, ip: str, duration: float, interval: float = 0.01) -> subprocess.Popen:
        """Start the ARP/NDP prober in the client namespace (`ip`: one, or several comma-separated);
        `probe_result` collects it (or `stop_probe`, before its duration is over);
        `probe_first_answer` waits until it runs (with several IPs, until every one answered)."""
        assert self.lab.client is not None
        return self.lab.popen(self.lab.client.netns, [
            sys.executable, "-m", "leifur_dev.probe", "--ip", ip, "--interval", str(interval),
            "--duration", str(duration)], stdout=subprocess.PIPE, text=True)

    @staticmethod
    def probe_first_answer(proc: subprocess.Popen, timeout: float = 60) -> str:
        """Wait until the probe got its first answer; the MAC that gave it."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        line = b""
        # Byte by byte from the pipe itself: a buffered read could take the final report along,
        # and probe_result reads that from the pipe too.
        while not line.endswith(b"\n"):
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                proc.terminate()
                raise TimeoutError(f"the probe got no answer within {timeout:.0f}s")
            byte = os.read(fd, 1)
            if not byte:
                raise RuntimeError(f"the probe exited with {proc.wait()} before any answer")
            line += byte
        msg = json.loads(line)
        if "first" not in msg:
            raise RuntimeError(f"the probe ended without an answer: {msg}")
        return msg["first"]

    @staticmethod
    def probe_result(proc: subprocess.Popen, timeout: float = 120) -> dict:
        out, _ = proc.communicate(timeout=timeout)
        lines = out.splitlines()
        if not lines:
            raise RuntimeError(f"the probe exited with {proc.returncode} and no report")
        return json.loads(lines[-1])

    @staticmethod
    def stop_probe(proc: subprocess.Popen) -> dict:
        """End a probe before its duration is over (it reports what it saw so far)."""
        proc.send_signal(signal.SIGTERM)
        return Stack.probe_result(proc)

    def capture(self, path: Path) -> subprocess.Popen:
        """tcpdump of ARP and ICMPv6 on the client's eth0 into `path`, until the process is stopped."""
        assert self.lab.client is not None
        proc = self.lab.popen(self.lab.client.netns, ["tcpdump", "-i", "eth0", "-U", "-w", str(path), "arp or icmp6"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # tcpdump says "listening on" once the capture runs.
        assert proc.stderr is not None
        proc.stderr.readline()
        return proc

    def record_heartbeats(self, host: netlab.Host, count: int = 30) -> str:
        """A pcap of `count` of `host`'s real (signed) heartbeats, as a LAN host with a mirror port
        would get them (for leifur_dev.attacker to replay)."""
        pcap = str(self.workdir / f"recorded-{host.name}.pcap")
        port = AgentSettings().heartbeat.port
        self.lab.run(host.netns, ["timeout", "20", "tcpdump", "-i", "eth0", "-c", str(count), "-w", pcap,
                                  f"udp and src host {host.ip4} and dst port {port}"], timeout=30)
        return pcap

    def attack(self, victim: netlab.Host, claim: str, pcap: str, duration: float) -> subprocess.Popen:
        """Start leifur_dev.attacker in the client namespace against `victim`'s peers; returns once
        its first round is out. `attack_result` stops it."""
        assert self.lab.client is not None
        peers = [h.ip4 for h in self.lab.nodes if h is not victim]
        proc = self.lab.popen(self.lab.client.netns, [
            sys.executable, "-m", "leifur_dev.attacker", "--node", self.node_name(victim), "--source", victim.ip4,
            "--targets", ",".join(peers), "--claim", claim, "--recorded", pcap, "--duration", str(duration)],
            stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if json.loads(line or "{}") != {"started": True}:
            raise RuntimeError(f"the attacker did not start: {line!r}")
        return proc

    @staticmethod
    def attack_result(proc: subprocess.Popen) -> dict:
        """Stop the attacker; its summary (wall-clock start and end, datagrams sent)."""
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        return json.loads(out.splitlines()[-1])

    def who_answers(self, ip: str, duration: float = 0.5) -> list[str]:
        """The MACs that answered ARP/NDP for `ip` from the client over `duration`."""
        return self.probe_result(self.probe(ip, duration, interval=0.05))["macs"]

    def answers(self, ips: list[str], duration: float = 1.0, interval: float = 0.25) -> dict[str, list[str]]:
        """IP -> the MACs that answered ARP/NDP for it from the client over `duration` (one family)."""
        result = self.probe_result(self.probe(",".join(ips), duration, interval))
        return {ip: r["macs"] for ip, r in result["ips"].items()}

    def mac_owner(self, mac: str) -> str | None:
        for h in self.lab.nodes:
            if h.mac == mac:
                return h.name
        return None

    def agent_requests(self) -> list[dict]:
        """The API requests agents of this lab made so far, from the API server's audit log, each once
        (a watch is logged when it opens and again when it ends): node, verb, resource, time received."""
        ours = {self.node_name(h) for h in self.lab.nodes}
        seen: dict[str, dict] = {}
        for e in self.cp.audit_entries():
            user = e.get("user") or {}
            node = ((user.get("extra") or {}).get("authentication.kubernetes.io/node-name") or [""])[0]
            agent = f"system:serviceaccount:{self.system_namespace}:{names.AGENT_NAME}"
            if user.get("username") != agent or node not in ours:
                continue
            ref = e.get("objectRef") or {}
            seen.setdefault(e.get("auditID"), {"node": node, "verb": e.get("verb"), "resource": ref.get("resource"),
                                               "at": e.get("requestReceivedTimestamp")})
        return sorted(seen.values(), key=lambda r: r["at"] or "")

    # -- teardown ---------------------------------------------------------------------------------

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.faults(0.0, 0.0)  # a test that failed mid-fault: let the clean-up through
        for a in self.agents.values():
            a.signal(15)
        for a in self.agents.values():
            a.wait_exit(10)
        custom = self.cluster.custom
        for ns in self.namespaces:
            with contextlib.suppress(ApiException):
                for svc in self.core.list_namespaced_service(ns).items:
                    self.core.delete_namespaced_service(svc.metadata.name, ns)
        if self.controller is not None:
            # Let the controller release and drop its finalizers before it goes.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and any(
                    self.core.list_namespaced_service(ns).items for ns in self.namespaces):
                time.sleep(0.2)
        for name in self.ads:
            with contextlib.suppress(ApiException):
                custom.delete_cluster_custom_object(names.GROUP, names.VERSION, names.L2ADVERTISEMENTS, name)
        for name in self.pools:
            self.cluster.delete_pool(name)
        if self.controller is not None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and any(self.cluster.pool_exists(p) for p in self.pools):
                time.sleep(0.2)
            self.controller.stop()
        if self.proxy is not None:
            self.proxy.stop()
        for ns in self.namespaces:
            with contextlib.suppress(ApiException):
                self.core.delete_namespace(ns)
        for host in self.lab.nodes:
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(f"agent-{self.node_name(host)}", self.system_namespace,
                                                grace_period_seconds=0)
            with contextlib.suppress(ApiException):
                self.core.delete_node(self.node_name(host))
            with contextlib.suppress(ApiException):
                custom.delete_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES,
                                                    self.node_name(host))
