"""The chaos suite's machinery: a seeded fault injector and an observer of the invariants.

A `Chaos` run drives a `Stack` (control plane, LAN, controller, agents) through a random but
repeatable sequence of faults and user edits while an `Observer` watches the Services (every
state the API server reports, not samples of them) and a capture runs on the client's LAN port.
Every fault is healed before the next one; after each, the run measures how long the system
takes to converge again.

Invariants (from DESIGN.md and issue 6):
- no IP held by two incompatible Services, ever;
- no assigned IP changes without a cause the user made (an edit of that Service or a pool);
- after the faults stop, every Service that can have an IP has one, and pool status adds up;
- at most one of our nodes' MACs answers for an IP outside a handover window (faults that split the agents'
  view — partitions, frozen agents — excepted while they last); every IP claimed on the LAN
  was allocated;
- no process of ours crashes on any input.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur.announce.election import owner
from leifur.ipam.sharing import incompatibility
from leifur.kube.informer import Informer
from leifur.model import names
from leifur.model.objects import key_of
from leifur.model.service import ServiceSpecError, ingress_ips, is_ours, traits_of
from leifur.model.settings import AgentSettings
from leifur_dev.cluster import wait_for
from leifur_dev.flaky import FlakyProxy
from leifur_dev.probe import claims_in_capture, handover_windows
from leifur_dev.stack import AgentProcess, Stack

HANDOVER_WINDOW = 0.3
PEERS = "leifur_agent_peers"
HEARTBEATS = "leifur_agent_heartbeats_total"
REJECTED = "leifur_agent_heartbeats_rejected_total"
CHURN = 4  # Services c0..c3 come and go during faults, beside the steady s0..s7
OTHER_CLASS = "example.com/other-load-balancer"
# Offsets of the lab subnet: the chaos pool has 30..55 (26 addresses for at most 8 + 4 + 4 Services);
# 56..59 are for the pools that the "pool deleted while in use" fault creates and deletes.
POOL_OFFSETS = (30, 55)
DOOMED_OFFSETS = (56, 59)
REPROBES = 3  # how often an IP that got no answer is probed again before it is called dark


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
    """Watches the Services of a namespace and checks the API-side invariants on every state seen.

    A watch delivers each change, so an IP held for a few milliseconds (a Service deleted while it
    is being reconciled) is seen too; only a relist after 410 Gone may fold several changes into one.
    """

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.informer = Informer(api_client, f"/api/v1/namespaces/{namespace}/services", "chaos-observer",
                                 request_timeout=3)
        self.informer.add_handler(lambda _o: self._changed(), lambda _o, _n: self._changed(),
                                  lambda _o: self._changed())
        self.violations: list[Violation] = []
        self.allocated: dict[str, float] = {}  # every IP ever seen in a status -> last seen
        self.samples = 0
        self._ips: dict[str, tuple[str, ...]] = {}
        self._causes: dict[str, float] = {}  # service key or "*" -> time of the user's last edit
        self._lock = threading.Lock()

    def start(self) -> Observer:
        # While the API server is down every request fails; urllib3's retry warnings would drown the log.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        self.informer.start()
        wait_for(self.informer.has_synced, 60, what="the observer's watch")
        return self

    def stop(self) -> None:
        self.informer.stop()

    def cause(self, key: str = "*") -> None:
        """The user is about to change Service `key` (or, "*", a pool): its IPs may change."""
        with self._lock:
            self._causes[key] = time.monotonic()

    def _changed(self) -> None:
        self.check(self.informer.objects(), time.monotonic())

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
                        self.violate(now, "shared-incompatibly", f"{ip}: {why}")
        with self._lock:
            for key, ips in current.items():
                before = self._ips.get(key)
                if before and ips != before and not set(before) <= set(ips):
                    caused = max(self._causes.get(key, -1e9), self._causes.get("*", -1e9))
                    # A cause is good for the change it leads to, within a generous bound.
                    if now - caused > 60:
                        self.violate(now, "ip-changed-without-cause", f"{key}: {before} -> {ips}")
                    self._causes.pop(key, None)
            self._ips = current

    def violate(self, now: float, invariant: str, detail: str) -> None:
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
    unconverged: str = ""  # why the last convergence check failed
    waited_for: str = ""  # what the last wait for convergence waited for, in order

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- set-up ---------------------------------------------------------------------------

    def setup(self) -> None:
        s = self.stack
        # Every API request of the controller and the agents goes through a proxy that can fail them.
        self.proxy = FlakyProxy(("127.0.0.1", s.cp.apiserver_port), seed=self.seed).start()
        s.use_proxy(self.proxy)
        self.pool = s.pool("chaos", [f"{s.lan_ip(POOL_OFFSETS[0])}-{s.lan_ip(POOL_OFFSETS[1])}"])
        s.advertisement("chaos", ipAddressPools=[self.pool], interfaces=["eth0"])
        s.advertisement("doomed", ipAddressPoolSelectors=[{"matchLabels": {"chaos": "doomed"}}], interfaces=["eth0"])
        s.start()
        for i in range(self.services):
            s.cluster.create_service(self.namespace, f"s{i}", ports=(80 + i,))
            s.endpoints(self.namespace, f"s{i}", s.lab.nodes)
        self.observer = Observer(s.api_client, self.namespace).start()
        self.wait_converged(120)

    # -- the faults -------------------------------------------------------------------------

    def faults(self) -> dict[str, Callable[[], None]]:
        return {
            "controller SIGKILL (3 times, at random moments)": self.kill_controller,
            "agent SIGKILL": self.kill_agent,
            "agent SIGTERM": self.term_agent,
            "agent frozen (SIGSTOP)": self.freeze_agent,
            "agents partitioned": self.partition,
            "node reboot (link down, agent restart)": self.reboot_node,
            "API server stopped": self.stop_api,
            "Service flips (type, class, policy, sharing, requested IP)": self.flip_service,
            "pool shrunk and expanded": self.edit_pool,
            "bad annotation": self.bad_annotation,
            "Service deleted and recreated": self.recreate_service,
            "two controllers, leader killed": self.second_controller,
            "node deleted from the API": self.delete_node,
            "overlapping pool created and deleted": self.overlapping_pool,
            "endpoints gone and back": self.endpoints_flap,
            "API requests reset or stalled at random": self.flaky_api,
            "watches expired (410 Gone) while the cluster changed": self.expire_watches,
            "Services deleted while being reconciled": self.delete_mid_reconcile,
            "pool deleted while in use": self.delete_pool_in_use,
            "pool edited into an invalid spec": self.invalid_pool,
            "heartbeats forged and replayed from the LAN": self.forge_heartbeats,
            "a host on the LAN claims a Service's IP": self.foreign_claim,
        }

    def run(self, steps: int, only: tuple[str, ...] = ()) -> None:
        """`steps` faults; with `only`, just the faults whose names contain one of those words."""
        faults = {n: f for n, f in self.faults().items() if not only or any(w in n for w in only)}
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
            if recovery > 2:
                self.log(f"  recovered in {recovery:.1f}s; waited for: {self.waited_for}")
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
        """SIGKILL three times in a row, at random moments while the user churns Services: in its
        start-up, in its first pass over every Service, or in a reconcile of a churned one."""
        ctl = self.stack.controller
        assert ctl is not None
        for _ in range(3):
            ctl.kill()
            time.sleep(self.rng.uniform(0.0, 1.0))
            ctl.start()
            time.sleep(self.rng.uniform(0.2, 3.0))
        ctl.wait_ready(60)

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
        agent = self.stack.agents[host.name]
        peers = [a for name, a in self.stack.agents.items() if name != host.name]
        sent = sum(p.metric(HEARTBEATS, direction="sent") for p in peers)
        received = _read(agent)
        start = time.time()
        agent.signal(signal.SIGSTOP)
        self._pause()
        self._wait_peers_ready({a: len(peers) - 1 for a in peers}, f"the peers of frozen {host.name} dropping it")
        agent.signal(signal.SIGCONT)
        # Until the thawed agent has read the heartbeats that queued while it was frozen, its metrics
        # are those from before the freeze, and it may still claim from that stale membership (once
        # read, queued datagrams count as received, or as rejected if they got too old). Each
        # peer sends one datagram to every other node per heartbeat; one more from each covers those
        # that were on the way when they were counted.
        queued = (sum(p.metric(HEARTBEATS, direction="sent") for p in peers) - sent) / len(peers) + len(peers)

        def caught_up() -> bool:
            return _read(agent) >= received + queued

        self.split_windows.append((start, self._split_over(caught_up)))

    def partition(self) -> None:
        host = self._node()
        agent = self.stack.agents[host.name]
        peers = [a for name, a in self.stack.agents.items() if name != host.name]
        drop = f"udp dport {AgentSettings().heartbeat.port} drop"
        cut = (f"table inet chaospart {{\n chain in {{\n  type filter hook input priority 0\n  {drop}\n }}\n"
               f" chain out {{\n  type filter hook output priority 0\n  {drop}\n }}\n}}\n")
        start = time.time()
        self.stack.lab.run(host.netns, ["nft", "-f", "-"], input=cut)
        self._pause()
        # Both sides have seen the split, so that the metrics read after the heal describe it.
        self._wait_peers_ready({agent: 0, **{a: len(peers) - 1 for a in peers}}, f"{host.name} cut off from its peers")
        self.stack.lab.run(host.netns, ["nft", "delete", "table", "inet", "chaospart"])
        self.split_windows.append((start, self._split_over()))

    def forge_heartbeats(self) -> None:
        """A host on the LAN records a node's heartbeats, then forges ("it leaves" or "it is alive",
        unsigned and with a made-up signature) and replays them to its peers, with the node's source
        address. Nothing may change: the same MACs answer while it lasts."""
        s = self.stack
        victim = self._node()
        expected = self._steady_expected()
        pcap = s.record_heartbeats(victim, count=20)
        claim = self.rng.choice(["leaving", "alive"])
        attacker = s.attack(victim, claim, pcap, duration=30)
        try:
            self._pause()
            self._check_answered(expected, f"while {victim.name}'s heartbeats were forged ({claim})")
        finally:
            s.attack_result(attacker)

    def foreign_claim(self) -> None:
        """A host on the LAN (the client) sends gratuitous ARP for a steady Service's IP from its own
        MAC. The owner counts the conflict, defends the IP with a gratuitous announcement and, as
        the claims go on, reports a persistent conflict (docs/agent.md#address-conflicts); our
        nodes' answers do not change (the capture check looks at our MACs only, and the owner's
        defence is the owner's MAC)."""
        s = self.stack
        expected = self._steady_expected()
        ip = self.rng.choice(sorted(expected))
        owner = next(a for a in s.agents.values() if a.host.mac == expected[ip])
        before = owner.metric("leifur_agent_conflicts_total")
        assert s.lab.client is not None
        claimant = s.lab.popen(s.lab.client.netns, [
            sys.executable, "-m", "leifur_dev.claimant", "--ip", ip, "--duration", "30"], stdout=subprocess.PIPE)
        try:
            wait_for(lambda: owner.metric("leifur_agent_conflicts_total") > before, 30,
                     what=f"{owner.node_name} counting the claim on {ip}")
            wait_for(lambda: owner.metric("leifur_agent_address_conflicts", kind="Claimed") > 0, 30,
                     what=f"{owner.node_name} reporting the persistent claim on {ip}")
            self._pause()
        finally:
            claimant.send_signal(signal.SIGTERM)
            claimant.communicate(timeout=30)
        self._check_answered(expected, f"after a foreign host claimed {ip}")

    def _wait_peers_ready(self, expected: dict[AgentProcess, int], what: str) -> None:
        """Until each agent reports as many ready peers as `expected` says."""
        def seen() -> bool:
            try:
                return all(a.metric(PEERS, state="ready") == n for a, n in expected.items())
            except OSError:
                return False
        wait_for(seen, 60, what=what)

    def _split_over(self, settled: Callable[[], bool] = lambda: True) -> float:
        """Wait until every agent hears all its peers ready and decides as they do (after `settled`);
        the wall-clock end of the split. A split lasts until then, however long the healed agent
        takes to run on a loaded machine. The agent that claimed without its peers lets go in the
        same sync in which it reports the agreement, a moment after: the handover window allows for
        that moment, as for any handover."""
        agents = list(self.stack.agents.values())

        def agreed() -> bool:
            try:
                return settled() and all(a.metric(PEERS, state="ready") == len(agents) - 1
                                         and a.metric(PEERS, state="differing") == 0 for a in agents)
            except OSError:
                return False
        wait_for(agreed, 60, what="every agent hearing all its peers ready and deciding as they do")
        return time.time() + HANDOVER_WINDOW

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
        wanted = self.stack.lan_ip(self.rng.randrange(POOL_OFFSETS[0], POOL_OFFSETS[1] + 1))
        # loadBalancerClass is immutable on a LoadBalancer Service: a user changes it by way of ClusterIP.
        patches, undo = self.rng.choice([
            ([{"spec": {"type": "ClusterIP"}}], [{"spec": {"type": "LoadBalancer"}}]),
            ([{"spec": {"type": "ClusterIP"}}, {"spec": {"type": "LoadBalancer", "loadBalancerClass": OTHER_CLASS}}],
             [{"spec": {"type": "ClusterIP", "loadBalancerClass": None}}, {"spec": {"type": "LoadBalancer"}}]),
            ([{"spec": {"externalTrafficPolicy": "Local"}}], [{"spec": {"externalTrafficPolicy": "Cluster"}}]),
            ([{"metadata": {"annotations": {names.ANN_ALLOW_SHARED_IP: "chaos-shared"}}}],
             [{"metadata": {"annotations": {names.ANN_ALLOW_SHARED_IP: None}}}]),
            ([{"metadata": {"annotations": {names.ANN_LOAD_BALANCER_IPS: wanted}}}],
             [{"metadata": {"annotations": {names.ANN_LOAD_BALANCER_IPS: None}}}]),
        ])
        self.log(f"  {name}: {patches[-1]}")
        for patch in patches:
            self.observer.cause(key)
            self.stack.cluster.patch_service(self.namespace, name, patch)
        self._pause()
        if patches[-1].get("spec", {}).get("loadBalancerClass") == OTHER_CLASS:
            self._check_let_go(name)
        for patch in undo:
            self.observer.cause(key)
            self.stack.cluster.patch_service(self.namespace, name, patch)

    def _check_let_go(self, name: str) -> None:
        """A Service handed to another implementation keeps no IP, status or finalizer of ours."""
        def let_go() -> bool:
            svc = self.stack.cluster.service(self.namespace, name)
            return not ingress_ips(svc) and names.SERVICE_FINALIZER not in (svc["metadata"].get("finalizers") or [])
        try:
            wait_for(let_go, 30, what="let go")
        except TimeoutError:
            self.observer.violate(time.monotonic(), "kept-foreign-service",
                                  f"{self.namespace}/{name} of class {OTHER_CLASS} still has our IP or finalizer")

    def edit_pool(self) -> None:
        s = self.stack
        self.observer.cause("*")
        # Shrink to the first 20 addresses (Services beyond them keep theirs, reported as outside).
        s.cluster.patch_pool(self.pool, {"addresses": [f"{s.lan_ip(30)}-{s.lan_ip(49)}"]})
        self._pause()
        self.observer.cause("*")
        s.cluster.patch_pool(self.pool, {"addresses": [f"{s.lan_ip(POOL_OFFSETS[0])}-{s.lan_ip(POOL_OFFSETS[1])}"]})

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

    def invalid_pool(self) -> None:
        """A typo in a pool edit. It must be reported on the pool (Valid=False, a Warning Event),
        and change nothing else: no IP moves (no cause is declared) and every IP stays announced."""
        s = self.stack
        good = s.cluster.pool(self.pool)["spec"]["addresses"]
        # The API server's CEL refuses the first four; a reversed IPv6 range only the controller
        # sees (CEL has no 128-bit integers to order its ends by).
        typo = self.rng.choice([f"{s.lan_ip(55)}-{s.lan_ip(30)}", f"{s.lan_ip(30)}/33", "192.0.2.300",
                                f"{s.lan_ip(30)}-2001:db8::1", "2001:db8::ff-2001:db8::1"])
        expected = self._steady_expected()
        try:
            s.cluster.patch_pool(self.pool, {"addresses": [*good, typo]})
        except ApiException as e:
            # The CRD's validation refuses what it can recognise (a bad octet, a /33, a reversed
            # or mixed-family range): the user gets the error at once and nothing changes. The
            # rest is the controller's to report.
            if e.status != 422 or s.cluster.pool(self.pool)["spec"]["addresses"] != good:
                raise
            self.log(f"  {typo!r} refused by the API server")
            return
        self.log(f"  {typo!r} accepted by the API server, reported by the controller")
        try:
            wait_for(lambda: (c := s.cluster.pool_condition(self.pool, names.COND_POOL_VALID))
                     and c["status"] == "False", 30, what=f"pool {self.pool} reported invalid")
            wait_for(lambda: any(e["type"] == "Warning" and typo in e["message"]
                                 for e in s.cluster.events("default", self.pool, kind="IPAddressPool")), 30,
                     what=f"a Warning Event on pool {self.pool}")
            self._pause()
            self._check_answered(expected, f"while pool {self.pool} is invalid")
        finally:
            s.cluster.patch_pool(self.pool, {"addresses": good})

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
        from leifur_dev.cluster import ControllerProcess

        s = self.stack
        standby = ControllerProcess(s.cp.kubeconfig, s.workdir / "controller-standby.log", token=s.metrics_token,
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
        """A second pool over part of the chaos pool, named to sort first (the controller once
        credited held IPs to it, and no advertisement selects it), then deleted: no IP moves or
        goes dark, and the pool goes although Services hold addresses in it."""
        s = self.stack
        expected = self._steady_expected()
        name = s.pool(f"a-overlap{self.rng.randrange(10**6)}", [f"{s.lan_ip(30)}-{s.lan_ip(44)}"])
        self._pause()
        self._check_answered(expected, f"while the overlapping pool {name} exists")
        s.cluster.delete_pool(name)
        wait_for(lambda: not s.cluster.pool_exists(name), 60, what=f"pool {name} deleted")
        s.pools.remove(name)
        self._check_answered(expected, f"after the overlapping pool {name} was deleted")

    def _steady_expected(self) -> dict[str, str]:
        """IP -> the MAC that should answer, for the steady Services (churned ones come and go). Each
        has its IP: a fault starts from a converged state."""
        s = self.stack
        live = [s.node_name(h) for h in s.lab.nodes]
        out: dict[str, str] = {}
        for i in range(self.services):
            ips = s.cluster.ips(self.namespace, f"s{i}")
            assert ips, f"{self.namespace}/s{i} has no IP at the start of a fault"
            out.update((ip, s.host_of(owner(live, ip)).mac) for ip in ips)
        return out

    def _check_answered(self, expected: dict[str, str], when: str) -> None:
        """Each IP answered by exactly its MAC, probed from the client; a violation otherwise. A wrong
        MAC is one at once. No answer at all may also be a probe that did not run in time (they start
        together, on a loaded machine): that IP is probed again, a bounded number of times, before it
        is called dark."""
        wrong = self._wrong_answers(expected)
        for _ in range(REPROBES):
            silent = {ip: expected[ip] for ip, macs in wrong.items() if not macs}
            if not silent:
                break
            wrong = {ip: macs for ip, macs in wrong.items() if macs} | self._wrong_answers(silent)
        for ip, macs in wrong.items():
            self.observer.violate(time.monotonic(), "not-announced",
                                  f"{ip} answered by {macs} {when} (expected {expected[ip]})")

    def _wrong_answers(self, expected: dict[str, str]) -> dict[str, list[str]]:
        """Probe every IP from the client for 0.6 s (in parallel): IP -> the MACs that answered, for
        each IP not answered by exactly its expected MAC."""
        s = self.stack
        probes = {ip: s.probe(ip, 0.6, interval=0.1) for ip in expected}
        answers = {ip: s.probe_result(p)["macs"] for ip, p in probes.items()}
        return {ip: answers[ip] for ip, mac in expected.items() if answers[ip] != [mac]}

    def expire_watches(self) -> None:
        """Every watch of ours is cut and kept cut while the cluster changes and the API server
        restarts (its watch cache then starts at the current revision). Resuming from the old
        resourceVersion is answered 410 Gone: every informer must list again and work out what it
        missed, a deletion included."""
        s = self.stack
        before = self._relists()
        gone, dark = self.rng.sample([f"s{i}" for i in range(self.services)], 2)
        self.proxy.faults(reset_share=1.0, stall_share=0.0)  # the controller and the agents only
        # Deleted while the controller cannot see it: our finalizer holds it until the controller is back.
        self.observer.cause(f"{self.namespace}/{gone}")
        s.core.delete_namespaced_service(gone, self.namespace)
        s.endpoints(self.namespace, dark, s.lab.nodes, ready=False)
        s.cp.stop_component("kube-apiserver")
        s.cp.start_component("kube-apiserver")
        s.cp.wait_ready()
        self._pause()
        self.proxy.faults(0.0, 0.0)
        wait_for(lambda: all(self._relists()[n] > before.get(n, 0) for n in s.agents), 60,
                 what="every agent listing again after 410 Gone")
        wait_for(lambda: (self.supervise(), not s.cluster.service_exists(self.namespace, gone))[1], 60,
                 what=f"{gone} released by the controller and deleted")
        self.observer.cause(f"{self.namespace}/{gone}")
        s.cluster.create_service(self.namespace, gone, ports=(80 + int(gone[1:]),))
        s.endpoints(self.namespace, dark, s.lab.nodes)

    def _relists(self) -> dict[str, float]:
        """Node name -> how often its agent's informers listed again after 410 Gone (or failed to resume)."""
        out = {}
        for name, agent in self.stack.agents.items():
            with contextlib.suppress(Exception):
                out[name] = agent.metric("leifur_informer_relists_total")
        return out

    def delete_mid_reconcile(self) -> None:
        """Services deleted while the controller is reconciling them: each is deleted 0-150 ms after
        it was created, between the controller's steps (finalizer, allocation, status write). Each
        must go away, with nothing left allocated."""
        s = self.stack
        doomed = [f"m{i}" for i in range(4)]
        stages = []
        for name in doomed:
            self.observer.cause(f"{self.namespace}/{name}")
            s.cluster.create_service(self.namespace, name, ports=(8000,))
            s.endpoints(self.namespace, name, s.lab.nodes)
            time.sleep(self.rng.uniform(0.0, 0.15))
            # The object as the delete found it says how far the controller had come.
            obj = s.api_client.sanitize_for_serialization(s.core.delete_namespaced_service(name, self.namespace))
            if names.SERVICE_FINALIZER not in (obj.get("metadata", {}).get("finalizers") or []):
                stages.append("before the finalizer")
            elif not ingress_ips(obj):
                stages.append("before the IP")
            else:
                stages.append("after the IP")
        self.log("  deleted: " + ", ".join(stages))
        wait_for(lambda: (self.supervise(), not any(s.cluster.service_exists(self.namespace, n) for n in doomed))[1],
                 60, what="the Services deleted mid-reconcile gone")

    def delete_pool_in_use(self) -> None:
        """A pool is deleted while a Service holds one of its addresses: the pool must stay (its
        finalizer, with a DeletionBlocked Warning), the Service must keep its IP and stay announced,
        and the pool goes once the user deletes the Service."""
        s = self.stack
        tag = self.rng.randrange(10**6)
        pool = s.pool(f"doomed{tag}", [f"{s.lan_ip(DOOMED_OFFSETS[0])}-{s.lan_ip(DOOMED_OFFSETS[1])}"],
                      autoAssign=False, labels={"chaos": "doomed"})
        svc = f"p{tag}"
        key = f"{self.namespace}/{svc}"
        self.observer.cause(key)
        s.cluster.create_service(self.namespace, svc, ports=(8001,), annotations={names.ANN_ADDRESS_POOL: pool})
        s.endpoints(self.namespace, svc, s.lab.nodes)
        ips = wait_for(lambda: s.cluster.ips(self.namespace, svc), 60, what=f"{key} given an IP from {pool}")
        owner_mac = s.host_of(owner([s.node_name(h) for h in s.lab.nodes], ips[0])).mac
        wait_for(lambda: s.who_answers(ips[0]) == [owner_mac], 60, what=f"{ips[0]} announced")
        s.cluster.delete_pool(pool)
        wait_for(lambda: s.cluster.has_event("default", pool, "DeletionBlocked", kind="IPAddressPool"), 60,
                 what=f"a DeletionBlocked Event on pool {pool}")
        self._pause()
        now = time.monotonic()
        if not s.cluster.pool_exists(pool):
            self.observer.violate(now, "pool-deleted-under-allocation", f"{pool} vanished while {key} held {ips}")
        if s.cluster.ips(self.namespace, svc) != ips:
            self.observer.violate(now, "ip-changed-without-cause", f"{key} lost {ips} when its pool was deleted")
        self._check_answered({ips[0]: owner_mac}, "while its pool is being deleted")
        self.observer.cause(key)
        s.cluster.delete_service(self.namespace, svc)
        wait_for(lambda: (self.supervise(), not s.cluster.pool_exists(pool))[1], 60,
                 what=f"pool {pool} gone after its last user")
        s.pools.remove(pool)

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
        """Every Service has its IP, the pool's status adds up, exactly the elected MAC answers.
        What was still missing is kept in `unconverged`."""
        self.supervise()
        s = self.stack
        try:
            pool = s.cluster.pool(self.pool)
            expected = self.expected()
        except ApiException as e:
            self.unconverged = f"API error {e.status}"
            return False
        if expected is None:
            self.unconverged = "a Service without its IP, or being deleted"
            return False
        in_use = (pool.get("status") or {}).get("ipv4", {}).get("inUse")
        if in_use != len(expected):
            self.unconverged = f"pool status says {in_use} in use, Services hold {len(expected)}"
            return False
        wrong = self._wrong_answers(expected)
        self.unconverged = f"answers {wrong}" if wrong else ""
        return not wrong

    def wait_converged(self, timeout: float) -> float:
        """Seconds from now until the start of the convergence check that passed (each check takes
        about 0.8 s, most of it probing from the client, so that is the resolution)."""
        start = time.monotonic()
        passed_at = start

        reasons: list[str] = []

        def check() -> bool:
            nonlocal passed_at
            passed_at = time.monotonic()
            done = self.converged()
            if not done and (not reasons or reasons[-1] != self.unconverged):
                reasons.append(self.unconverged)
            return done

        try:
            wait_for(check, timeout, interval=0.2, what="convergence after a fault")
        except TimeoutError as e:
            raise TimeoutError(f"seed {self.seed}: no convergence within {timeout:.0f}s; still missing, "
                               f"in order: {'; '.join(reasons)}") from e
        self.waited_for = "; ".join(reasons)
        return passed_at - start

    # -- the LAN ----------------------------------------------------------------------------

    def lan_violations(self, pcap: str, ips: list[str]) -> list[Violation]:
        """Two MACs claiming an IP outside a handover window (and outside splits), and claims of
        IPs that were never allocated."""
        out = []
        ours = {h.mac for h in self.stack.lab.nodes}
        for ip in ips:
            # Our nodes' claims: a foreign claimant (that fault) is the LAN's, not ours to count.
            claims = [(t, mac) for t, mac in claims_in_capture(pcap, ip) if mac in ours]
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


def _read(agent: AgentProcess) -> float:
    """Datagrams `agent` has read from its heartbeat socket, accepted or not."""
    return agent.metric(HEARTBEATS, direction="received") + agent.metric(REJECTED)
