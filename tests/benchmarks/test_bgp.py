"""BGP mode measured from the client's side of the lab's router (BIRD 2), FRR on every node driven
by its agent: failover blackouts (a node crashed with and without BFD, an agent stopped
gracefully) with the layer-2 crash blackout beside them; the time from a Service's creation to a
route at the router against BIRD learning a route given to FRR by hand; 1,000 Services to routes,
with the agents' CPU and memory.

LEIFUR_BENCHMARKS=1 pytest tests/benchmarks/test_bgp.py -s

The probe (leifur_dev.flowprobe) sends a UDP datagram every 10 ms from 64 source ports through
the router, whose multipath route spreads them over the nodes: a crash loses only the flows that
hashed to the dead node, so a blackout here is the time from the first to the last datagram lost
after the fault, not the longest run of consecutive losses.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_agent_failover import _failover, _kill, _owner_host
from test_agent_failover import _setup as _l2_setup
from test_agent_scale import _cpu_seconds

from leifur_dev import bird, netlab, runtime
from leifur_dev.bgpstack import SETTLE, BGPStack, host_prefix
from leifur_dev.cluster import wait_for
from leifur_dev.stack import Stack

pytestmark = [pytest.mark.benchmark, pytest.mark.netns, pytest.mark.controlplane]

INTERVAL = 0.01
BFD_RUNS, HOLD_RUNS, GRACEFUL_RUNS, L2_RUNS = 5, 3, 3, 5
# Without BFD only the hold timer tells the router a node died: short, so that runs stay short.
HOLD_S, KEEPALIVE_S = 9, 3
CREATIONS = 50
SCALE = 1000
V6 = {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}


def _ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.0f} ms, min {min(values) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def loss_after(result: dict, since: float, interval: float = INTERVAL) -> tuple[int, float]:
    """(datagrams lost, seconds from the first to the last of them plus one interval) among those
    the probe sent at or after `since` (wall clock)."""
    times = result["send_times"]
    lost = [seq for seq in result["lost"] if result["start"] + times[seq] >= since]
    if not lost:
        return 0, 0.0
    return len(lost), times[lost[-1]] - times[lost[0]] + interval


def _setup(bgp: BGPStack, addresses: list[str], peer: dict | None = None) -> str:
    """A pool of `addresses` advertised to the router, everything started and every session
    Established; the test's namespace."""
    pool = bgp.stack.pool("bgp", addresses)
    bgp.peer(**(peer or {}))
    bgp.advertisement("bgp", ipAddressPools=[pool])
    bgp.start()
    wait_for(bgp.established, SETTLE, interval=0.5, what="every node's session Established at the router")
    return bgp.stack.namespace("apps")


def _serving_everywhere(bgp: BGPStack, ip: str) -> None:
    bgp.wait_advertised(ip, bgp.lab.nodes)
    wait_for(lambda: bgp.reached(ip) == {h.name for h in bgp.lab.nodes}, SETTLE, interval=0.5,
             what=f"every node serving the remote client on {ip}")


def _revive(bgp: BGPStack, host: netlab.Host) -> None:
    """Undo BGPStack.crash: the node's network back, its FRR and agent started again."""
    for family in ("netdev", "inet"):
        bgp.lab.run(host.netns, ["nft", "delete", "table", family, "leifurtest-dead"])
    bgp.start_frr(host)
    bgp.start_agent(host).wait_ready()


def _fault_run(bgp: BGPStack, ip: str, fault, heal, done) -> tuple[int, float]:
    """With every node serving the probe: `fault()`, then `done()` true, then `heal()`; the
    datagrams lost after the fault and how long the loss lasted."""
    _serving_everywhere(bgp, ip)
    probe = bgp.probe(ip, duration=300, interval=INTERVAL)
    Stack.probe_first_answer(probe)
    time.sleep(1.0)
    at = time.time()
    fault()
    wait_for(done, SETTLE, interval=0.05, what="the fault seen at the router")
    time.sleep(1.0)  # the survivors answer on for a while: the loss has ended
    result = Stack.stop_probe(probe)
    heal()
    return loss_after(result, at)


def _crash_runs(bgp: BGPStack, ip: str, runs: int) -> list[float]:
    blackouts = []
    for run in range(runs):
        dead = bgp.lab.nodes[run % len(bgp.lab.nodes)]
        alive = [h for h in bgp.lab.nodes if h != dead]
        lost, blackout = _fault_run(bgp, ip, lambda d=dead: bgp.crash(d), lambda d=dead: _revive(bgp, d),
                                    lambda a=alive: bgp.next_hops(ip) == bgp.node_hops(ip, a))
        print(f"  crash of {dead.name}, run {run + 1}: {lost} datagrams lost over {blackout * 1000:.0f} ms")
        blackouts.append(blackout)
    return blackouts


BFD_ROUTER = bird.RouterConfig(bfd=bird.BFDTimers(min_rx_ms=100, min_tx_ms=100, multiplier=3))
HOLD_ROUTER = bird.RouterConfig(hold_time=HOLD_S)


def test_crash_blackout_with_bfd_and_graceful_stop(bgp_stack):
    """BFD at 100 ms x 3 on both sides; then SIGTERM of an agent (it withdraws before it exits)."""
    bgp = bgp_stack
    bgp.router = bird.Router(bgp.lab, BFD_ROUTER)
    profile = f"{bgp.lab.id}-fast"
    ns = _setup(bgp, [f"{bgp.stack.lan_ip(40)}-{bgp.stack.lan_ip(49)}"], peer={"bfdProfile": profile})
    bgp.bfd_profile("fast", receiveInterval=100, transmitInterval=100, detectMultiplier=3)
    wait_for(lambda: set(bgp.router.bfd_sessions().values()) == {"Up"} and len(bgp.router.bfd_sessions()) == 3,
             SETTLE, interval=0.5, what="BFD Up with every node at the router")
    ip = bgp.stack.service(ns, "web")
    bgp.serve(ip)
    print(f"\nBGP crash (network silenced, agent and FRR SIGKILLed), BFD 100 ms x 3, {BFD_RUNS} runs:")
    crashes = _crash_runs(bgp, ip, BFD_RUNS)
    graceful = []
    for run in range(GRACEFUL_RUNS):
        leaving = bgp.lab.nodes[run % len(bgp.lab.nodes)]
        staying = [h for h in bgp.lab.nodes if h != leaving]
        agent = bgp.stack.agents[leaving.name]
        lost, _ = _fault_run(bgp, ip, lambda a=agent: a.signal(signal.SIGTERM),
                             lambda h=leaving: bgp.start_agent(h).wait_ready(),
                             lambda a=agent, s=staying: a.wait_exit(0) is not None
                             and bgp.next_hops(ip) == bgp.node_hops(ip, s))
        print(f"  SIGTERM of {leaving.name}'s agent, run {run + 1}: {lost} datagrams lost")
        graceful.append(lost)
    print(f"BGP crash with BFD: {_ms(crashes)}")
    print(f"BGP graceful SIGTERM: datagrams lost per run {graceful}")


def test_crash_blackout_without_bfd(bgp_stack):
    """No BFD: the router notices by its hold timer, HOLD_S (KEEPALIVE_S) on both sides."""
    bgp = bgp_stack
    bgp.router = bird.Router(bgp.lab, HOLD_ROUTER)
    ns = _setup(bgp, [f"{bgp.stack.lan_ip(40)}-{bgp.stack.lan_ip(49)}"],
                peer={"holdTime": f"{HOLD_S}s", "keepaliveTime": f"{KEEPALIVE_S}s"})
    ip = bgp.stack.service(ns, "web")
    bgp.serve(ip)
    print(f"\nBGP crash without BFD, hold time {HOLD_S} s, keepalive {KEEPALIVE_S} s, {HOLD_RUNS} runs:")
    crashes = _crash_runs(bgp, ip, HOLD_RUNS)
    print(f"BGP crash without BFD (hold {HOLD_S} s): {_ms(crashes)}")


def test_layer2_crash_blackout_beside_bgp(stack):
    """The layer-2 baseline in the same run: the owning agent SIGKILLed (test_agent_failover's)."""
    ns = _l2_setup(stack)
    ip = stack.service(ns, "web")
    gaps = []
    for run in range(L2_RUNS):
        first = _owner_host(stack, ip, stack.lab.nodes)
        second = _owner_host(stack, ip, [h for h in stack.lab.nodes if h != first])
        gaps.append(_failover(stack, ip, first, second, _kill(stack.agents[first.name], signal.SIGKILL),
                              f"bgp-baseline-l2-SIGKILL-run{run + 1}", "SIGKILL"))
        stack.start_agent(first).wait_ready()
    print(f"layer 2 crash (SIGKILL, ARP probe every 10 ms), {L2_RUNS} runs: {_ms(gaps)}")


def _until(fn, timeout: float = SETTLE, interval: float = 0.01) -> float:
    """Poll `fn` until true; the monotonic time it first was."""
    wait_for(fn, timeout, interval=interval, what="a route at the router")
    return time.monotonic()


def _hand_route(bgp: BGPStack, host: netlab.Host, peer: str, prefix: str, seq: int) -> None:
    """`prefix` given to `host`'s FRR by hand, as the agent writes it: a network statement and a
    permit in the peer's outbound route-map."""
    bgp.frr[host.name].vtysh(
        "configure terminal", f"ipv6 prefix-list leifur-bench seq {seq} permit {prefix}",
        f"route-map leifur-out-{peer} permit 1", "match ipv6 address prefix-list leifur-bench", "exit",
        f"router bgp {bgp.router.config.node_asn}", "address-family ipv6 unicast", f"network {prefix}")


def test_service_creation_to_route_at_the_router(bgp_stack):
    """Each of CREATIONS IPv6 Services: create (with its endpoints) → the first path at BIRD, and →
    every node's next hop in the router's kernel. Interleaved, the baseline: a prefix given to
    node1's FRR by vtysh → its path at BIRD."""
    bgp = bgp_stack
    ns = _setup(bgp, [f"{bgp.stack.lan_ip(0x200, 6)}-{bgp.stack.lan_ip(0x2ff, 6)}"])
    peer = f"{bgp.lab.id}-router"
    node1 = bgp.lab.nodes[0]
    # One Service first: node1's outbound route-map exists, which the baseline adds to.
    bgp.wait_advertised(bgp.stack.service(ns, "warm", **V6), bgp.lab.nodes)
    first, every, hand = [], [], []
    for i in range(CREATIONS):
        start = time.monotonic()
        bgp.stack.cluster.create_service(ns, f"s{i}", **V6)
        bgp.stack.endpoints(ns, f"s{i}", bgp.lab.nodes)
        ip = wait_for(lambda n=f"s{i}": (ips := bgp.stack.cluster.ips(ns, n)) and ips[0], 30, interval=0.01,
                      what="an IP")
        first.append(_until(lambda i=ip: bgp.paths(i)) - start)
        every.append(_until(lambda i=ip: bgp.next_hops(i) == bgp.node_hops(i, bgp.lab.nodes)) - start)
        prefix = host_prefix(bgp.stack.lan_ip(0x300 + i, 6))
        start = time.monotonic()
        _hand_route(bgp, node1, peer, prefix, i + 1)
        hand.append(_until(lambda p=prefix: bgp.router.paths(p)) - start)
    print(f"\nService created → route at the router, {CREATIONS} IPv6 Services, 3 nodes:")
    for name, values in (("Service → first path at BIRD", first), ("Service → every node's next hop", every),
                         ("baseline: vtysh → path at BIRD", hand)):
        print(f"  {name}: p50 {_pct(values, 0.5) * 1000:.0f} ms, p99 {_pct(values, 0.99) * 1000:.0f} ms, "
              f"max {max(values) * 1000:.0f} ms")


def _complete_routes(bgp: BGPStack, pool: ipaddress.IPv6Network) -> int:
    """How many of the pool's host routes the router's kernel has with a next hop per node."""
    res = bgp.lab.run(bgp.router.host.netns, ["ip", "-j", "-6", "route", "show", "proto", "bird"])
    return sum(1 for r in json.loads(res.stdout or "[]")
               if ipaddress.ip_network(r["dst"] if "/" in r["dst"] else f"{r['dst']}/128").subnet_of(pool)
               and len(bird.multipath_next_hops([r])) == len(bgp.lab.nodes))


def _cpu_with_children(pid: int) -> float:
    """CPU seconds of `pid` and of the children it waited for (the agent's vtysh and frr-reload.py)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


@pytest.mark.timeout(1800)
def test_a_thousand_services_to_routes(bgp_stack):
    """SCALE IPv6 Services created by 8 threads: until every one is a route at the router with a
    next hop per node (counted every second meanwhile); the agents' CPU (with their vtysh and
    frr-reload.py) and memory, and FRR's CPU."""
    bgp = bgp_stack
    low, high = bgp.stack.lan_ip(0x1000, 6), bgp.stack.lan_ip(0x1000 + SCALE - 1, 6)
    ns = _setup(bgp, [f"{low}-{high}"])
    pool = ipaddress.ip_network(f"{low}/116", strict=False)  # 0x1000..0x1fff
    pids = {h.name: bgp.stack.agents[h.name].proc.pid for h in bgp.lab.nodes}
    frr_pids = {h.name: list(bgp.frr[h.name].pids().values()) for h in bgp.lab.nodes}
    cpu_before = {n: _cpu_with_children(p) for n, p in pids.items()}
    frr_before = {n: sum(_cpu_seconds(p) for p in ps) for n, ps in frr_pids.items()}
    rss_before = {n: runtime.memory_kib(p)[1] for n, p in pids.items()}

    def create(i: int) -> None:
        bgp.stack.cluster.create_service(ns, f"s{i}", **V6)
        bgp.stack.endpoints(ns, f"s{i}", bgp.lab.nodes)

    counts: list[tuple[float, int]] = []  # (seconds after the first create, complete routes)
    start = time.monotonic()
    done = threading.Event()

    def count() -> None:
        while not done.wait(1.0):
            counts.append((time.monotonic() - start, _complete_routes(bgp, pool)))

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    with ThreadPoolExecutor(8) as pool_threads:
        list(pool_threads.map(create, range(SCALE)))
    created = time.monotonic() - start
    try:
        wait_for(lambda: counts and counts[-1][1] >= SCALE, 1500, interval=1, what=f"{SCALE} routes complete")
    finally:
        done.set()
        counter.join(10)
    converged = counts[-1][0]
    half = next(t for t, n in counts if n >= SCALE // 2)
    at_created = max((n for t, n in counts if t <= created), default=0)
    cpu = {n: _cpu_with_children(p) - cpu_before[n] for n, p in pids.items()}
    frr_cpu = {n: sum(_cpu_seconds(p) for p in ps) - frr_before[n] for n, ps in frr_pids.items()}
    rss = {n: runtime.memory_kib(p) for n, p in pids.items()}
    print(f"\n{SCALE} IPv6 Services → routes at the router (3 nodes, one multipath route each):")
    print(f"  created (8 threads, with EndpointSlices) in {created:.1f} s, {at_created} routes complete by then; "
          f"half at {half:.0f} s, all {SCALE} at {converged:.0f} s after the first create (counted every second)")
    for name in pids:
        peak, now = rss[name]
        share = cpu[name] / converged * 100
        print(f"  {name}: agent CPU {cpu[name]:.1f} s with its vtysh and frr-reload ({share:.0f} % of a core"
              f" over {converged:.0f} s), FRR CPU {frr_cpu[name]:.1f} s; agent RSS {rss_before[name]} kB "
              f"before, peak {peak} kB, now {now} kB")

    # A graceful stop with every route advertised: the agent withdraws them all before it exits.
    first = bgp.lab.nodes[0]
    agent = bgp.stack.agents[first.name]
    stopping = time.monotonic()
    agent.signal(signal.SIGTERM)
    code = agent.wait_exit(60)
    exited = time.monotonic() - stopping
    # Only this node stopped: a route still with a next hop per node still goes through it.
    via_stopped = _complete_routes(bgp, pool)
    print(f"  SIGTERM of {first.name}'s agent with {SCALE} routes: exit {code} after {exited:.1f} s; routes via "
          f"{first.name} left at the router when it had exited: {via_stopped}")
    assert code == 0 and via_stopped == 0
