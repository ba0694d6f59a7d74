"""BGP mode under faults of the routing daemons: the router (BIRD) killed and restarted, every
session flapped from the router's side (`birdc disable` / `enable`), a node's FRR killed and
started again (from the file its agent wrote, or empty, as a sidecar with a fresh volume), in a
seeded order, each fault while a Service is deleted and created again.

Invariants:
- at no sampled moment does the router hold a prefix that is not the host route of a Service IP
  Leifur allocated (the router's tables are read every SAMPLE seconds throughout the run);
- after each fault, every session is Established again and every Service IP has exactly the
  paths of its eligible nodes at the router (all nodes for Cluster, the endpoint node for Local);
- no agent exits that the run did not stop.

    LEIFUR_BGP_CHAOS_ROUNDS=3 LEIFUR_CHAOS_SEED=7 .venv/bin/pytest tests/chaos/test_bgp_chaos.py -s
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import pytest

from leifur_dev import bird, frr
from leifur_dev.bgpstack import SETTLE, BGPStack, host_prefix
from leifur_dev.cluster import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]

ROUNDS = int(os.environ.get("LEIFUR_BGP_CHAOS_ROUNDS", "2"))  # every fault once per round
SEED = int(os.environ.get("LEIFUR_CHAOS_SEED", "20261124"))
SAMPLE = 0.1
# Comma-separated words: only the faults whose names contain one (to chase one fault).
ONLY = tuple(w for w in os.environ.get("LEIFUR_BGP_CHAOS_FAULTS", "").split(",") if w)


class RouteSampler:
    """Reads the router's IPv4 and IPv6 tables every SAMPLE seconds and keeps every prefix that is
    not the host route of an IP the namespace's Services were given (by Leifur, from its pool)."""

    def __init__(self, bgp: BGPStack, ns: str) -> None:
        self.bgp, self.ns = bgp, ns
        self.allocated: set[str] = set()  # host prefixes of every IP ever seen on a Service
        self.samples = 0
        self.routes_seen = 0  # samples in which the router held any route: the sampler reads something
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RouteSampler:
        # The IPs held now first: a fault that deletes a Service at once would otherwise leave
        # its route at the router with its IP never seen.
        self._refresh()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _refresh(self) -> None:
        for svc in self.bgp.stack.cluster.core.list_namespaced_service(self.ns).items:
            for ingress in (svc.status.load_balancer and svc.status.load_balancer.ingress) or []:
                if ingress.ip:
                    self.allocated.add(host_prefix(ingress.ip))

    def held(self) -> set[str]:
        """Every prefix in BIRD's tables now (none while BIRD is down)."""
        out: set[str] = set()
        for table in ("master4", "master6"):
            res = subprocess.run(["birdc", "-r", "-s", str(self.bgp.router.socket), "show", "route", "table", table],
                                 capture_output=True, text=True, timeout=30)
            if res.returncode == 0:
                out |= set(bird.parse_routes(res.stdout))
        return out

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE):
            held = self.held()
            self.samples += 1
            self.routes_seen += bool(held)
            # The Services are read after the router: an IP allocated between the two is known.
            self._refresh()
            for prefix in sorted(held - self.allocated):
                self.violations.append(f"{time.strftime('%H:%M:%S')} the router holds {prefix}, not an allocated IP")


def birdc(bgp: BGPStack, *command: str) -> str:
    """birdc with control rights (Router.birdc is restricted to reading)."""
    res = subprocess.run(["birdc", "-s", str(bgp.router.socket), *command], capture_output=True, text=True,
                         timeout=30, check=True)
    return res.stdout


class BGPChaos:
    def __init__(self, bgp: BGPStack, ns: str, seed: int) -> None:
        self.bgp, self.ns = bgp, ns
        self.rng = random.Random(seed)
        self.log: list[tuple[str, float]] = []  # (fault, seconds to converge after it was healed)
        self.churned = 0

    def faults(self) -> dict:
        return {"router restarted (SIGKILL)": self.restart_router,
                "router restarted (SIGTERM)": lambda: self.bgp.router.restart(signal.SIGTERM),
                "sessions flapped at the router": self.flap,
                "node's FRR killed, restarted from its file": lambda: self.restart_frr(keep_config=True),
                "node's FRR killed, restarted empty": lambda: self.restart_frr(keep_config=False)}

    def restart_router(self) -> None:
        self.bgp.router.restart(signal.SIGKILL)

    def flap(self) -> None:
        nodes = [h.name for h in self.bgp.lab.nodes]
        for name in nodes:
            birdc(self.bgp, "disable", name)
        time.sleep(self.rng.uniform(0.5, 3))
        for name in nodes:
            birdc(self.bgp, "enable", name)

    def restart_frr(self, keep_config: bool) -> None:
        host = self.rng.choice(self.bgp.lab.nodes)
        old = self.bgp.frr[host.name]
        written = old.config_path.read_text()
        old.stop(signal.SIGKILL)
        time.sleep(self.rng.uniform(0.2, 2))
        if keep_config:
            self.bgp.frr[host.name] = frr.FRR(self.bgp.lab, host).start(written)
        else:
            self.bgp.start_frr(host)

    def churn(self) -> None:
        """The churning Service deleted and created again (its IP may change) as the fault starts."""
        cluster = self.bgp.stack.cluster
        if cluster.service_exists(self.ns, "churn"):
            cluster.delete_service(self.ns, "churn")
            wait_for(lambda: not cluster.service_exists(self.ns, "churn"), 30, what="churn deleted")
        self.bgp.stack.cluster.create_service(self.ns, "churn")
        self.bgp.stack.endpoints(self.ns, "churn", self.bgp.lab.nodes)
        self.churned += 1

    def expected(self, local_host) -> dict[str, list]:
        """Service IP -> the nodes that must advertise it."""
        ips = {name: self.bgp.stack.cluster.ips(self.ns, name) for name in ("web", "web6", "local", "churn")}
        out = {ip: list(self.bgp.lab.nodes) for name in ("web", "web6", "churn") for ip in ips[name]}
        out.update({ip: [local_host] for ip in ips["local"]})
        return out

    def converged(self, local_host) -> bool:
        expected = self.expected(local_host)
        return (self.bgp.established() and len(expected) == 4
                and all(self.bgp.advertisers(ip) == {h.name for h in hosts}
                        and self.bgp.next_hops(ip) == self.bgp.node_hops(ip, hosts) for ip, hosts in expected.items()))


def test_bgp_converges_and_never_routes_an_unallocated_ip_under_daemon_faults(bgp_stack):
    bgp = bgp_stack
    pool = bgp.stack.pool("bgp", [f"{bgp.stack.lan_ip(40)}-{bgp.stack.lan_ip(49)}",
                                  f"{bgp.stack.lan_ip(0x40, 6)}-{bgp.stack.lan_ip(0x4f, 6)}"])
    bgp.peer()
    bgp.advertisement("bgp", ipAddressPools=[pool])
    bgp.start()
    ns = bgp.stack.namespace("chaos")
    local_host = bgp.lab.nodes[1]
    bgp.stack.service(ns, "web")
    bgp.stack.service(ns, "web6", ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")
    bgp.stack.service(ns, "local", endpoint_hosts=[local_host], externalTrafficPolicy="Local")
    chaos = BGPChaos(bgp, ns, SEED)
    chaos.churn()
    wait_for(lambda: chaos.converged(local_host), SETTLE, interval=0.5, what="the first convergence")
    agents = {h.name: bgp.stack.agents[h.name].proc for h in bgp.lab.nodes}
    sampler = RouteSampler(bgp, ns).start()
    try:
        for _ in range(ROUNDS):
            order = [(n, f) for n, f in chaos.faults().items() if not ONLY or any(w in n for w in ONLY)]
            chaos.rng.shuffle(order)
            for name, fault in order:
                chaos.churn()
                fault()
                healed = time.monotonic()
                wait_for(lambda: chaos.converged(local_host), SETTLE, interval=0.2,
                         what=f"convergence after: {name} (seed {SEED})")
                chaos.log.append((name, time.monotonic() - healed))
    finally:
        sampler.stop()
    print(f"\nBGP chaos: seed {SEED}, {len(chaos.log)} faults, {sampler.samples} samples of the router's tables, "
          f"({sampler.routes_seen} with routes), {chaos.churned} Service re-creations, "
          f"{len(sampler.allocated)} IPs allocated in all")
    for name, took in chaos.log:
        print(f"  {name:45} converged {took:5.1f} s after")
    print(f"violations: {len(sampler.violations)}")
    assert not sampler.violations, f"seed {SEED}:\n" + "\n".join(sampler.violations[:20])
    # The sampler read routes between the faults (the router holds none while it restarts).
    assert sampler.routes_seen >= len(chaos.log), (sampler.routes_seen, sampler.samples)
    exited = {name: proc.returncode for name, proc in agents.items() if proc.poll() is not None}
    assert not exited, f"seed {SEED}: agents exited: {exited}"
