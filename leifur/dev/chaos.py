"""The chaos suite's machinery: a seeded fault injector and an observer of the invariants.

A `Chaos` run drives a `Stack` (control plane, LAN, controller, agents) through a random but
repeatable sequence of faults and user edits while an `Observer` samples the API several times
a second and a capture runs on the client's LAN port. Every fault is healed before the next
one; after each, the run measures how long the system takes to converge again.

Invariants (from DESIGN.md and issue 6):
- no IP held by two incompatible Services, ever;
- no assigned IP changes without a cause the user made (an edit of that Service or a pool);
- after the faults stop, every Service that can have an IP has one, and pool status adds up;
- at most one MAC answers for an IP outside a handover window (faults that split the agents'
  view — partitions, frozen agents — excepted while they last); every IP claimed on the LAN
  was allocated;
- no process of ours crashes on any input.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.rest import ApiException

from agent.election import owner
from leifur import names
from leifur.controller.service import ServiceSpecError, ingress_ips, is_ours, key_of, traits_of
from leifur.dev.cluster import wait_for
from leifur.dev.flaky import FlakyProxy
from leifur.dev.probe import claims_in_capture, handover_windows
from leifur.dev.stack import Stack
from leifur.ipam.sharing import incompatibility

HANDOVER_WINDOW = 0.3
CHURN = 4  # Services c0..c3 come and go during faults, beside the steady s0..s7


@dataclass
class Violation:
    t: float
    invariant: str
    detail: str


@dataclass
class FaultStats:
    injected: int = 0
    longest_recovery: float = 0.0


class Observer:
    """Samples Services every `interval` s and checks the API-side invariants as it goes."""

    def __init__(self, api_client: client.ApiClient, namespace: str, interval: float = 0.25) -> None:
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.interval = interval
        self.violations: list[Violation] = []
        self.allocated: dict[str, float] = {}  # every IP ever seen in a status -> last seen
        self.samples = 0
        self._ips: dict[str, tuple[str, ...]] = {}
        self._causes: dict[str, float] = {}  # service key or "*" -> time of the user's last edit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)

    def start(self) -> Observer:
        # While the API server is down every sample fails; urllib3's retry warnings would drown the log.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def cause(self, key: str = "*") -> None:
        """The user is about to change Service `key` (or, "*", a pool): its IPs may change."""
        with self._lock:
            self._causes[key] = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                items = self.core.list_namespaced_service(self.namespace, _request_timeout=2).items
            except Exception:
                continue  # the API server is down: nothing to observe
            svcs = [self.core.api_client.sanitize_for_serialization(s) for s in items]
            self.check(svcs, time.monotonic())

    def check(self, svcs: list[dict], now: float) -> None:
        self.samples += 1
        holders: dict[str, list[dict]] = {}
        current: dict[str, tuple[str, ...]] = {}
        for svc in svcs:
            ips = tuple(sorted(str(ip) for ip in ingress_ips(svc)))
            key = key_of(svc)
            current[key] = ips
            for ip in ips:
                self.allocated[ip] = now
                if is_ours(svc, None) or svc["metadata"].get("deletionTimestamp"):
                    holders.setdefault(ip, []).append(svc)
        for ip, held in holders.items():
            for i, a in enumerate(held):
                for b in held[i + 1:]:
                    try:
                        why = incompatibility(traits_of(a), traits_of(b))
                    except ServiceSpecError:
                        why = None  # a Service made malformed by the user on purpose
                    if why:
                        self._violate(now, "shared-incompatibly", f"{ip}: {why}")
        with self._lock:
            for key, ips in current.items():
                before = self._ips.get(key)
                if before and ips != before and not set(before) <= set(ips):
                    caused = max(self._causes.get(key, -1e9), self._causes.get("*", -1e9))
                    # A cause is good for the change it leads to, within a generous bound.
                    if now - caused > 60:
                        self._violate(now, "ip-changed-without-cause", f"{key}: {before} -> {ips}")
                    self._causes.pop(key, None)
            self._ips = current

    def _violate(self, now: float, invariant: str, detail: str) -> None:
        self.violations.append(Violation(now, invariant, detail))


@dataclass
class Chaos:
    """A seeded run of faults against `stack`. The stack is started by the caller."""

    stack: Stack
    namespace: str
    seed: int
    services: int = 8
    fault_seconds: tuple[float, float] = (1.0, 4.0)
    api_outage_seconds: float = 8.0
    log: Callable[[str], None] = print
    rng: random.Random = field(init=False)
    stats: dict[str, FaultStats] = field(default_factory=dict)
    observer: Observer | None = None
    split_windows: list[tuple[float, float]] = field(default_factory=list)  # wall-clock partitions/freezes
    pool: str = ""
    proxy: FlakyProxy | None = None
    crashes: list[str] = field(default_factory=list)
    restarts: int = 0  # controller restarts after a lost Lease
    churned: int = 0  # Services created or deleted by the user during faults

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- set-up ---------------------------------------------------------------------------

    def setup(self) -> None:
        s = self.stack
        # Every API request of the controller and the agents goes through a proxy that can fail them.
        self.proxy = FlakyProxy(("127.0.0.1", s.cp.apiserver_port), seed=self.seed).start()
        s.use_proxy(self.proxy.port)
        self.pool = s.pool("chaos", [f"{s.lan_ip(30)}-{s.lan_ip(59)}"])
        s.advertisement("chaos", ipAddressPools=[self.pool], interfaces=["eth0"])
        s.start()
        for i in range(self.services):
            s.cluster.create_service(self.namespace, f"s{i}", ports=(80 + i,))
            s.endpoints(self.namespace, f"s{i}", s.lab.nodes)
        self.observer = Observer(s.api_client, self.namespace).start()
        self.wait_converged(120)

    # -- the faults -------------------------------------------------------------------------

    def faults(self) -> dict[str, Callable[[], None]]:
        return {
            "controller SIGKILL": self.kill_controller,
            "agent SIGKILL": self.kill_agent,
            "agent SIGTERM": self.term_agent,
            "agent frozen (SIGSTOP)": self.freeze_agent,
            "agents partitioned": self.partition,
            "node reboot (link down, agent restart)": self.reboot_node,
            "API server stopped": self.stop_api,
            "Service flips (type, policy, sharing, requested IP)": self.flip_service,
            "pool shrunk and expanded": self.edit_pool,
            "bad annotation": self.bad_annotation,
            "Service deleted and recreated": self.recreate_service,
            "two controllers, leader killed": self.second_controller,
            "node deleted from the API": self.delete_node,
            "overlapping pool created and deleted": self.overlapping_pool,
            "endpoints gone and back": self.endpoints_flap,
            "API requests reset or stalled at random": self.flaky_api,
        }

    def run(self, steps: int) -> None:
        faults = self.faults()
        names_ = sorted(faults)
        # Every fault once, in a seeded order, then seeded random picks: a short run covers them all.
        order = self.rng.sample(names_, len(names_))
        for step in range(steps):
            name = order[step] if step < len(order) else self.rng.choice(names_)
            self.log(f"step {step + 1}/{steps}: {name}")
            # The user keeps creating and deleting Services while the fault lasts.
            stop_churn = threading.Event()
            churn = threading.Thread(target=self._churn, args=(stop_churn, step), daemon=True)
            churn.start()
            try:
                faults[name]()
            finally:
                stop_churn.set()
                churn.join(30)
            recovery = self.wait_converged(120)
            st = self.stats.setdefault(name, FaultStats())
            st.injected += 1
            st.longest_recovery = max(st.longest_recovery, recovery)

    def _churn(self, stop: threading.Event, step: int) -> None:
        """Create and delete the churn Services c0..c3 at random until `stop`. The API may be down or
        flaky meanwhile: a failed call is what a user would see and retry, not an error of ours.
        (Its own RNG: thread timing is not replayable, the fault sequence is.)"""
        rng = random.Random(self.seed * 1000 + step)
        s = self.stack
        while not stop.wait(rng.uniform(0.3, 1.0)):
            i = rng.randrange(CHURN)
            name = f"c{i}"
            self.observer.cause(f"{self.namespace}/{name}")
            try:
                if s.cluster.service_exists(self.namespace, name):
                    s.core.delete_namespaced_service(name, self.namespace, _request_timeout=3)
                else:
                    s.cluster.create_service(self.namespace, name, ports=(9000 + i,))
                    s.endpoints(self.namespace, name, s.lab.nodes)
                self.churned += 1
            except Exception:
                continue

    def _pause(self) -> float:
        d = self.rng.uniform(*self.fault_seconds)
        time.sleep(d)
        return d

    def _node(self):
        return self.rng.choice(self.stack.lab.nodes)

    def kill_controller(self) -> None:
        ctl = self.stack.controller
        assert ctl is not None
        ctl.kill()
        self._pause()
        ctl.start().wait_ready(60)

    def kill_agent(self) -> None:
        self._stop_and_restart_agent(signal.SIGKILL)

    def term_agent(self) -> None:
        self._stop_and_restart_agent(signal.SIGTERM)

    def _stop_and_restart_agent(self, sig: signal.Signals) -> None:
        host = self._node()
        self.stack.agents[host.name].signal(sig)
        self.stack.agents[host.name].wait_exit(15)
        self._pause()
        self.stack.start_agent(host, reuse_credentials=True).wait_ready(60)

    def freeze_agent(self) -> None:
        host = self._node()
        start = time.time()
        self.stack.agents[host.name].signal(signal.SIGSTOP)
        self._pause()
        self.stack.agents[host.name].signal(signal.SIGCONT)
        # A thawed agent answers from its old view until its first sweep: a split while it lasts.
        self.split_windows.append((start, time.time() + 1.0))

    def partition(self) -> None:
        host = self._node()
        cut = ("table inet chaospart {\n chain in {\n  type filter hook input priority 0\n  udp dport 7474 drop\n }\n"
               " chain out {\n  type filter hook output priority 0\n  udp dport 7474 drop\n }\n}\n")
        start = time.time()
        self.stack.lab.run(host.netns, ["nft", "-f", "-"], input=cut)
        self._pause()
        self.stack.lab.run(host.netns, ["nft", "delete", "table", "inet", "chaospart"])
        self.split_windows.append((start, time.time() + 1.0))

    def reboot_node(self) -> None:
        host = self._node()
        agent = self.stack.agents[host.name]
        agent.signal(signal.SIGKILL)
        agent.wait_exit(10)
        self.stack.lab.run(host.netns, ["ip", "link", "set", "eth0", "down"])
        self._pause()
        self.stack.lab.run(host.netns, ["ip", "link", "set", "eth0", "up"])
        self.stack.start_agent(host, reuse_credentials=True).wait_ready(60)

    def stop_api(self) -> None:
        cp = self.stack.cp
        cp.stop_component("kube-apiserver")
        time.sleep(self.api_outage_seconds)
        cp.start_component("kube-apiserver")
        cp.wait_ready()

    def _svc(self) -> str:
        return f"s{self.rng.randrange(self.services)}"

    def flip_service(self) -> None:
        name = self._svc()
        key = f"{self.namespace}/{name}"
        # Each change with the patch that undoes it. A requested IP may be free or held by another
        # Service (then it is refused with a reason, and the holder must keep it).
        wanted = self.stack.lan_ip(self.rng.randrange(30, 60))
        patch, undo = self.rng.choice([
            ({"spec": {"type": "ClusterIP"}}, {"spec": {"type": "LoadBalancer"}}),
            ({"spec": {"externalTrafficPolicy": "Local"}}, {"spec": {"externalTrafficPolicy": "Cluster"}}),
            ({"metadata": {"annotations": {names.ANN_ALLOW_SHARED_IP: "chaos-shared"}}},
             {"metadata": {"annotations": {names.ANN_ALLOW_SHARED_IP: None}}}),
            ({"metadata": {"annotations": {names.ANN_LOAD_BALANCER_IPS: wanted}}},
             {"metadata": {"annotations": {names.ANN_LOAD_BALANCER_IPS: None}}}),
        ])
        self.observer.cause(key)
        self.stack.cluster.patch_service(self.namespace, name, patch)
        self._pause()
        self.observer.cause(key)
        self.stack.cluster.patch_service(self.namespace, name, undo)

    def edit_pool(self) -> None:
        s = self.stack
        self.observer.cause("*")
        # Shrink to the first 20 addresses (Services beyond them keep theirs, reported as outside).
        s.cluster.patch_pool(self.pool, {"addresses": [f"{s.lan_ip(30)}-{s.lan_ip(49)}"]})
        self._pause()
        self.observer.cause("*")
        s.cluster.patch_pool(self.pool, {"addresses": [f"{s.lan_ip(30)}-{s.lan_ip(59)}"]})

    def bad_annotation(self) -> None:
        name = self._svc()
        key = f"{self.namespace}/{name}"
        garbage = self.rng.choice(["not-an-ip", "203.0.113.1,203.0.113.2", "::::", "1.2.3.4/24", "\x00"])
        self.observer.cause(key)
        self.stack.cluster.patch_service(self.namespace, name, {"metadata": {"annotations": {
            names.ANN_LOAD_BALANCER_IPS: garbage}}})
        # Reported on the object: the condition says InvalidRequest and a Warning Event says why.
        wait_for(lambda: (c := self.stack.cluster.service_condition(self.namespace, name))
                 and c["reason"] == "InvalidRequest", 30, what=f"an InvalidRequest condition on {key}")
        wait_for(lambda: any(e["type"] == "Warning" and "InvalidRequest" in e["message"]
                             for e in self.stack.cluster.events(self.namespace, name)), 30,
                 what=f"a Warning Event on {key}")
        self.observer.cause(key)
        self.stack.cluster.patch_service(self.namespace, name, {"metadata": {"annotations": {
            names.ANN_LOAD_BALANCER_IPS: None}}})

    def recreate_service(self) -> None:
        name = self._svc()
        key = f"{self.namespace}/{name}"
        self.observer.cause(key)
        self.stack.cluster.delete_service(self.namespace, name)
        wait_for(lambda: not self.stack.cluster.service_exists(self.namespace, name), 60,
                 what=f"{key} deleted")
        self.observer.cause(key)
        self.stack.cluster.create_service(self.namespace, name, ports=(80 + int(name[1:]),))

    def flaky_api(self) -> None:
        # A third of new connections reset, a fifth stalled for 3 s; open watches cut at once.
        self.proxy.faults(reset_share=0.33, stall_share=0.2, stall_seconds=3.0)
        self._pause()
        self._pause()
        self.proxy.faults(0.0, 0.0)

    def second_controller(self) -> None:
        from leifur.dev.cluster import ControllerProcess

        s = self.stack
        standby = ControllerProcess(s.cp.kubeconfig, s.workdir / "controller-standby.log",
                                    identity=f"standby-{self.rng.randrange(10**6)}", lease_namespace="leifur-system")
        standby.start().wait_ready(60)
        self._pause()
        # The leader dies; the standby takes the Lease and must change nothing.
        assert s.controller is not None
        s.controller.kill()
        self._pause()
        s.controller.start().wait_ready(60)
        standby.stop()

    def delete_node(self) -> None:
        s = self.stack
        host = self._node()
        s.core.delete_node(s.node_name(host))
        self._pause()
        s.create_node(host)

    def overlapping_pool(self) -> None:
        s = self.stack
        name = s.pool(f"overlap{self.rng.randrange(10**6)}", [f"{s.lan_ip(40)}-{s.lan_ip(44)}"])
        self._pause()
        s.cluster.delete_pool(name)
        wait_for(lambda: not s.cluster.pool_exists(name), 60, what=f"pool {name} deleted")
        s.pools.remove(name)

    def endpoints_flap(self) -> None:
        name = self._svc()
        self.stack.endpoints(self.namespace, name, self.stack.lab.nodes, ready=False)
        self._pause()
        self.stack.endpoints(self.namespace, name, self.stack.lab.nodes)

    # -- convergence ------------------------------------------------------------------------

    def expected(self) -> dict[str, str] | None:
        """IP -> MAC of the node that should announce it, from the API's current state; None while
        a Service still waits for its IP or for its release."""
        s = self.stack
        out = {}
        live = [s.node_name(h) for h in s.lab.nodes]
        for item in s.core.list_namespaced_service(self.namespace).items:
            svc = s.api_client.sanitize_for_serialization(item)
            ips = [str(ip) for ip in ingress_ips(svc)]
            if svc["metadata"].get("deletionTimestamp") or not ips:
                return None
            for ip in ips:
                out[ip] = s.host_of(owner(live, ip)).mac
        return out

    def supervise(self) -> None:
        """Act as the kubelet: a controller that exited after losing its Lease (exit code 1, by
        design: it restarts as a follower with fresh state) is started again. Any other exit is a crash."""
        ctl = self.stack.controller
        if ctl is None or ctl.alive() or ctl.proc is None:
            return
        if ctl.proc.returncode != 1:
            self.crashes.append(f"controller exited with {ctl.proc.returncode}")
        self.restarts += 1
        ctl.start()

    def converged(self) -> bool:
        self.supervise()
        s = self.stack
        try:
            pool = s.cluster.pool(self.pool)
            expected = self.expected()
        except ApiException:
            return False
        if expected is None:
            return False
        in_use = (pool.get("status") or {}).get("ipv4", {}).get("inUse")
        if in_use != len(expected):
            return False
        probes = {ip: s.probe(ip, 0.6, interval=0.1) for ip in expected}
        answers = {ip: s.probe_result(p)["macs"] for ip, p in probes.items()}
        return all(answers[ip] == [mac] for ip, mac in expected.items())

    def wait_converged(self, timeout: float) -> float:
        start = time.monotonic()
        wait_for(self.converged, timeout, interval=0.2, what="convergence after a fault")
        return time.monotonic() - start

    # -- the LAN ----------------------------------------------------------------------------

    def lan_violations(self, pcap: str, ips: list[str]) -> list[Violation]:
        """Two MACs claiming an IP outside a handover window (and outside splits), and claims of
        IPs that were never allocated."""
        out = []
        for ip in ips:
            claims = claims_in_capture(pcap, ip)
            if claims and ip not in self.observer.allocated:
                out.append(Violation(claims[0][0], "announced-without-allocation", ip))
            for first, last, macs in handover_windows(claims, HANDOVER_WINDOW):
                if last - first > HANDOVER_WINDOW and not (self._in_split(first) and self._in_split(last)):
                    out.append(Violation(first, "two-macs-answering",
                                         f"{ip}: {sorted(macs)} for {last - first:.2f}s from t={first:.3f}"))
        return out

    def _in_split(self, t: float) -> bool:
        return any(lo <= t <= hi for lo, hi in self.split_windows)

    def crashed(self) -> list[str]:
        """Processes of ours that died unasked, and tracebacks in any log."""
        self.supervise()  # a controller that just lost its Lease exited on purpose
        out = list(self.crashes)
        s = self.stack
        for a in s.agents.values():
            if not a.alive():
                out.append(f"agent {a.node_name} is not running")
            if "Traceback" in a.log_path.read_text(errors="replace"):
                out.append(f"agent {a.node_name} logged a traceback")
        ctl = s.controller
        if ctl is not None:
            with contextlib.suppress(FileNotFoundError):
                if "Traceback" in ctl.log_path.read_text(errors="replace"):
                    out.append("controller logged a traceback")
        return out
