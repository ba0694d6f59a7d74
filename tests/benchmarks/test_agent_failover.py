"""Failover blackout seen from the client, after SIGKILL and after SIGTERM of the owning agent,
and after the owner's LAN link goes down while its heartbeats still flow; then the agents'
steady-state API requests with 100 Services, and their peak memory.

LEIFUR_BENCHMARKS=1 pytest tests/benchmarks/test_agent_failover.py -s

The failover runs twice, with signed heartbeats (the default) and with unsigned ones as the
baseline, and once more with MetalLB's speakers instead of Leifur's agents, the competitor on the
same lab; the link-down handover has a crash on the same lab as its baseline. Each failover's
timeline of answers per MAC is drawn into LEIFUR_BENCH_FIGURES (leifur_dev.benchfigures).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import statistics
import time

import pytest

from leifur.announce.election import owner
from leifur_dev import benchfigures, metallb, runtime
from leifur_dev.cluster import wait_for

pytestmark = [pytest.mark.benchmark, pytest.mark.netns, pytest.mark.controlplane]

RUNS = int(os.environ.get("LEIFUR_FAILOVER_RUNS", "5"))
# The owner answers this long before the fault, so that each run's timeline shows the time before
# it too; the blackout is the longest gap between answers, which this does not change.
BEFORE_FAULT = 0.2


def _setup(stack) -> str:
    pool = stack.pool("lan", [f"{stack.lan_ip(30)}-{stack.lan_ip(59)}"])
    stack.advertisement("lan", ipAddressPools=[pool], interfaces=["eth0"])
    stack.start()
    return stack.namespace("apps")


def _owner_host(stack, ip, hosts):
    return stack.host_of(owner([stack.node_name(h) for h in hosts], ip))


def _draw(stack, result: dict, faulted_at: float, fault: str, name: str) -> None:
    """The run's timeline of answers per MAC around the fault, and its record (LEIFUR_BENCH_FIGURES)."""
    record = benchfigures.failover_record(result, faulted_at - result["start"],
                                          {h.mac: h.name for h in stack.lab.nodes}, fault)
    benchfigures.write(f"{name}.json", json.dumps(record))
    benchfigures.write(f"{name}.svg", benchfigures.failover_timeline(
        record, f"{name}: who answered the client's ARP probes"))


def _failover(stack, ip: str, first, second, fault, name: str, label: str) -> float:
    """One failover from `first` to `second` (lab hosts) by `fault()`, with the client probing
    every 10 ms: its blackout (the longest gap between answers), drawn as `name`."""
    wait_for(lambda: stack.who_answers(ip) == [first.mac], 90, what="the owner answering alone")
    probe = stack.probe(ip, duration=120.0, interval=0.01)
    # The fault comes once the probe sees the owner answer, however long the probe took to start.
    assert stack.probe_first_answer(probe) == first.mac
    time.sleep(BEFORE_FAULT)
    faulted_at = time.time()
    fault()
    wait_for(lambda: stack.who_answers(ip) == [second.mac], 90, what="the new owner answering alone")
    result = stack.stop_probe(probe)
    assert result["last_mac"] == second.mac, result["changes"]
    print(f"{name}: blackout {result['longest_gap'] * 1000:.0f} ms")
    _draw(stack, result, faulted_at, label, name)
    return result["longest_gap"]


def _kill(agent, sig: signal.Signals):
    def fault() -> None:
        agent.signal(sig)
        agent.wait_exit(10)
    return fault


@pytest.mark.parametrize("auth", ["signed", "unsigned"])
def test_failover_blackout(stack, auth):
    """`signed` is the default; `unsigned` (--insecure-heartbeats, the format before signing) is the
    baseline measured in the same run."""
    if auth == "unsigned":
        stack.agent_args = ("--insecure-heartbeats",)
    ns = _setup(stack)
    ip = stack.service(ns, "web")
    results: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
    for run in range(RUNS):
        for sig in (signal.SIGKILL, signal.SIGTERM):
            first = _owner_host(stack, ip, stack.lab.nodes)
            second = _owner_host(stack, ip, [h for h in stack.lab.nodes if h != first])
            results[sig.name].append(_failover(stack, ip, first, second, _kill(stack.agents[first.name], sig),
                                               f"failover-{auth}-{sig.name}-run{run + 1}", sig.name))
            stack.start_agent(first).wait_ready()
    print(f"\nfailover blackout from the client, {auth} heartbeats (ARP probe every 10 ms), {RUNS} runs:")
    for name, gaps in results.items():
        print(f"  {auth} {name}: median {statistics.median(gaps) * 1000:.0f} ms, "
              f"min {min(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms")


def test_failover_blackout_of_metallbs_speakers(stack, mlb):
    """The competitor on the same lab: MetalLB's layer-2 speakers (v0.15.3, built from its Go
    module, memberlist for liveness), SIGKILL and SIGTERM of the one announcing the IP."""
    stack.start(agents=False, controller=False)  # the Node objects only: no Leifur program runs
    nodes = {stack.node_name(h): h for h in stack.lab.nodes}
    mlb.create(metallb.pool("lan", mlb.ns, [f"{stack.lan_ip(30)}-{stack.lan_ip(59)}"]))
    mlb.create(metallb.l2_advertisement("lan", mlb.ns, interfaces=["eth0"]))
    mlb.controller()
    mlb.svc("web")
    stack.endpoints(mlb.ns, "web", stack.lab.nodes)
    (ip,) = mlb.wait_ips("web")
    mlb.start_speakers(stack.kubeconfig, {name: (host.netns, host.ip4) for name, host in nodes.items()})
    results: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
    for run in range(RUNS):
        for sig in (signal.SIGKILL, signal.SIGTERM):
            # MetalLB's election is not sticky: a restarted speaker takes its IP back, and fails again.
            first = nodes[metallb.l2_owner(list(nodes), ip)]
            second = nodes[metallb.l2_owner([n for n, h in nodes.items() if h != first], ip)]
            speaker = mlb.speakers[stack.node_name(first)]
            # SIGTERM by stop(), which waits for it to exit; SIGKILL by kill().
            fault = speaker.kill if sig == signal.SIGKILL else speaker.stop
            results[sig.name].append(_failover(stack, ip, first, second, fault,
                                               f"failover-metallb-{sig.name}-run{run + 1}", sig.name))
            speaker.start().wait_ready()
    print(f"\nfailover blackout from the client, MetalLB's speakers (ARP probe every 10 ms), {RUNS} runs:")
    for name, gaps in results.items():
        print(f"  MetalLB {name}: median {statistics.median(gaps) * 1000:.0f} ms, "
              f"min {min(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms")


@pytest.mark.parametrize("stack", [{"node_count": 3, "backplane": True}], indirect=True)
def test_lan_link_down_blackout(stack):
    """Heartbeats over the backplane, clients on the LAN: the owner's LAN switch port goes down (it
    tells its peers, which stay hearing it); the baseline is a crash (SIGKILL) on the same lab."""
    ns = _setup(stack)
    ip = stack.service(ns, "web")
    results: dict[str, list[float]] = {"link down": [], "SIGKILL": []}
    for run in range(RUNS):
        for fault, gaps in results.items():
            first = _owner_host(stack, ip, stack.lab.nodes)
            second = _owner_host(stack, ip, [h for h in stack.lab.nodes if h != first])
            act = ((lambda f=first: stack.lab.set_lan_port(f, up=False)) if fault == "link down"
                   else _kill(stack.agents[first.name], signal.SIGKILL))
            gaps.append(_failover(stack, ip, first, second, act, f"lan-{fault.replace(' ', '-')}-run{run + 1}",
                                  fault))
            if fault == "link down":
                stack.lab.set_lan_port(first, up=True)
            else:
                stack.start_agent(first).wait_ready()
    print(f"\nblackout from the client (ARP probe every 10 ms), {RUNS} runs:")
    for fault, gaps in results.items():
        print(f"  {fault}: median {statistics.median(gaps) * 1000:.0f} ms, "
              f"min {min(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms")


def test_steady_state_api_requests_and_memory_with_100_services(stack):
    ns = _setup(stack)
    # 100 Services share the 30 addresses in groups (same sharing key, different ports).
    for i in range(100):
        stack.cluster.create_service(ns, f"s{i}", ports=(1000 + i,),
                                     annotations={"leifur.io/allow-shared-ip": f"k{i % 30}"})
        stack.endpoints(ns, f"s{i}", stack.lab.nodes)
    wait_for(lambda: all(stack.cluster.ips(ns, f"s{i}") for i in range(100)), 120, what="100 Services with IPs")
    announced = lambda: sum(a.metric("leifur_agent_announced_ips") for a in stack.agents.values())  # noqa: E731
    wait_for(lambda: announced() == 30, 60, what="30 IPs announced")
    time.sleep(5)  # let the record writes of the ramp-up land
    window = float(os.environ.get("LEIFUR_STEADY_SECONDS", "60"))
    start = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    time.sleep(window)
    during = [r for r in stack.agent_requests() if r["at"] >= start]
    print(f"\nsteady state, 100 Services on 30 IPs, 3 agents, {window:.0f} s window:")
    for host in stack.lab.nodes:
        mine = [r for r in during if r["node"] == stack.node_name(host)]
        writes = [r for r in mine if r["verb"] not in ("get", "list", "watch")]
        print(f"  {host.name}: {len(mine) * 60 / window:.1f} requests/min "
              f"({len(writes) * 60 / window:.1f} writes/min): {sorted({(r['verb'], r['resource']) for r in mine})}")
    for host in stack.lab.nodes:
        pid = stack.agents[host.name].proc.pid
        peak, now = runtime.memory_kib(pid)
        print(f"  {host.name}: peak RSS {peak} kB, now {now} kB")
