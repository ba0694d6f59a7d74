"""Controller scale against one real kube-apiserver: memory with no Services, throughput on a backlog, live creation,
restart, peak memory and writes per Service, each next to the rate a bare client can write
Service status to the same API server (issue 16).

LEIFUR_BENCHMARKS=1 .venv/bin/pytest tests/benchmarks/test_controller_scale.py -s

Backlogs of 1,000 and 5,000 Services (LEIFUR_SCALE_SIZES=1000,5000); LEIFUR_SCALE_MAX=10000 adds a
backlog of that size. The live run creates LEIFUR_SCALE_LIVE Services (default 5,000) with the
controller running, then SIGKILLs it and starts a new one.

Every test gets an API server of its own, so that one run's Services are not in the next one's
caches. Addresses come from the documentation ranges only, as everywhere: an IPv4 Service needs
an IPv4 ClusterIP from the API server's /24 (198.51.100.0/24), so the first V4_SERVICES Services
are the IPv4 and dual-stack mix and the rest are IPv6 (ClusterIPs from 2001:db8:ffff::/112).

Correctness is asserted (every Service gets the IPs it asks for, no IP is held twice except by
Services that may share it, a restart changes none); times are printed, with the targets of
issue 16 beside them, and never asserted. Each run draws its Services with IPs over time, and the
backlogs their throughput and memory against N, into LEIFUR_BENCH_FIGURES (leifur_dev.benchfigures).
"""

from __future__ import annotations

import ipaddress
import os
import re
import statistics
import time
from collections import defaultdict

import pytest
from kubernetes import client

from leifur.kube import timestamps
from leifur.kube.client import request
from leifur.model import names
from leifur.model.objects import key_of
from leifur_dev import benchfigures, runtime
from leifur_dev.cluster import ControllerProcess, metrics_reader_token
from leifur_dev.scale import (
    CREATE_THREADS,
    SIZES,
    TARGET_FRACTION,
    TARGET_LIVE_P99,
    TARGET_MEMORY_MB,
    TARGET_RESTART_READY,
    IPWatch,
    all_ips,
    api_writes,
    baseline,
    create_services,
    foreground,
    percentile,
    print_writes,
    rounded,
    seconds,
    start_controller,
    summary,
    wait_health_ready,
    wait_quiet,
    wait_synced,
    world,
    write_kinds,
)
from leifur_dev.svgplot import Mark

pytestmark = [pytest.mark.benchmark, pytest.mark.controlplane]

if os.environ.get("LEIFUR_SCALE_MAX"):
    SIZES = [*SIZES, int(os.environ["LEIFUR_SCALE_MAX"])]
LIVE = int(os.environ.get("LEIFUR_SCALE_LIVE", "5000"))
NAMESPACES = 10
IDLE_SETTLE = 5.0  # seconds an idle controller runs after ready before its memory is read

# The IPv4 ClusterIPs of the default /24 hold about 250 Services: the mix with IPv4 is the first 200.
V4_SERVICES = 200
POOLS = {"bench-v4": ["203.0.113.0/24"], "bench-v4-b": ["192.0.2.0/24"], "bench-v6": ["2001:db8:1::/112"],
         "bench-v6-b": ["2001:db8:2::/112"]}
REQUESTED_V4 = ipaddress.ip_address("203.0.113.200")  # far above what the lowest-free search reaches
REQUESTED_V6 = ipaddress.ip_address("2001:db8:1::8000")


# -- the Services -----------------------------------------------------------------------------

def service_name(i: int) -> tuple[str, str]:
    return f"bench-{i % NAMESPACES}", f"s{i:05d}"


def service_body(i: int) -> dict:
    """A mix in blocks of 20. The first V4_SERVICES: 12 IPv4 (one with a requested IP, four sharing
    one IP, one from a named pool), 6 IPv6 (one requested, two sharing), one PreferDualStack, one
    RequireDualStack. The rest: IPv6, one requested, four sharing one IP, one from a named pool."""
    ns, name = service_name(i)
    r, block = i % 20, i // 20
    annotations: dict[str, str] = {}
    port = 80
    if i >= V4_SERVICES:
        families, policy = ["IPv6"], "SingleStack"
        if r == 0:
            annotations[names.ANN_LOAD_BALANCER_IPS] = str(REQUESTED_V6 + block)
        elif r in (1, 2, 3, 4):
            annotations[names.ANN_ALLOW_SHARED_IP] = f"v6-{block}"
            port = 1000 + r
        elif r == 5:
            annotations[names.ANN_ADDRESS_POOL] = "bench-v6-b"
    else:
        families, policy, port = _v4_mix(r, block, annotations)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False, "selector": {"app": name},
                 "ipFamilies": families, "ipFamilyPolicy": policy,
                 "ports": [{"name": "p", "port": port, "protocol": "TCP"}]},
    }


def _v4_mix(r: int, block: int, annotations: dict[str, str]) -> tuple[list[str], str, int]:
    """Families, policy and port of the `r`th Service of a block of the IPv4 mix; its annotations."""
    port = 80
    if r < 12:
        families, policy = ["IPv4"], "SingleStack"
    elif r < 18:
        families, policy = ["IPv6"], "SingleStack"
    elif r == 18:
        families, policy = ["IPv4", "IPv6"], "PreferDualStack"
    else:
        families, policy = ["IPv6", "IPv4"], "RequireDualStack"
    if r == 0:
        annotations[names.ANN_LOAD_BALANCER_IPS] = str(REQUESTED_V4 + block)
    elif r == 12:
        annotations[names.ANN_LOAD_BALANCER_IPS] = str(REQUESTED_V6 + block)
    elif r in (1, 2, 3, 4):
        annotations[names.ANN_ALLOW_SHARED_IP] = f"v4-{block}"
        port = 1000 + r
    elif r in (13, 14):
        annotations[names.ANN_ALLOW_SHARED_IP] = f"v6-{block}"
        port = 1000 + r
    elif r == 5:
        annotations[names.ANN_ADDRESS_POOL] = "bench-v4-b"
    return families, policy, port


def expected_families(i: int) -> list[int]:
    r = i % 20
    if i >= V4_SERVICES:
        return [6]
    return [4] if r < 12 else [6] if r < 18 else [4, 6]


def index_of(key: str) -> int | None:
    m = re.fullmatch(r"bench-\d+/s(\d+)", key)
    return int(m.group(1)) if m else None


def wanted(key: str) -> int | None:
    """How many IPs a benchmark Service asks for (None: not the benchmark's)."""
    i = index_of(key)
    return None if i is None else len(expected_families(i))


def ours(key: str) -> bool:
    return index_of(key) is not None


def bench_world():
    """A fresh API server with the mix's pools and namespaces."""
    return world(POOLS, (f"bench-{n}" for n in range(NAMESPACES)))


# -- the checks -------------------------------------------------------------------------------


def server_latencies(api: client.ApiClient) -> list[float]:
    """create -> IP as the objects record it, to the second: the IPAllocated condition's
    lastTransitionTime minus creationTimestamp (a cross-check of the watch's timing, which a
    loaded benchmark process could delay)."""
    out = []
    for s in request(api, "GET", "/api/v1/services", timeout=120)["items"]:
        if index_of(key_of(s)) is None:
            continue
        cond = next(c for c in s["status"]["conditions"] if c["type"] == names.COND_SERVICE_ALLOCATED)
        created = timestamps.parse(s["metadata"]["creationTimestamp"])
        allocated = timestamps.parse(cond["lastTransitionTime"])
        assert created is not None and allocated is not None
        out.append((allocated - created).total_seconds())
    return sorted(out)


def check_allocation(ips: dict[str, list[str]], n: int) -> None:
    """Every Service has one IP per family it asks for, its requested IP if it asked for one,
    and no IP is held twice except by Services with the same sharing key."""
    assert len(ips) == n, f"{len(ips)} Services listed, {n} created"
    holders: dict[str, list[int]] = defaultdict(list)
    for key, got in ips.items():
        i = index_of(key)
        assert i is not None
        families = sorted(ipaddress.ip_address(ip).version for ip in got)
        assert families == sorted(expected_families(i)), f"{key}: {got}"
        want = service_body(i)["metadata"]["annotations"].get(names.ANN_LOAD_BALANCER_IPS)
        if want:
            assert got == [want], f"{key} asked for {want}, holds {got}"
        for ip in got:
            holders[ip].append(i)
    for ip, idx in holders.items():
        if len(idx) > 1:
            keys = {service_body(i)["metadata"]["annotations"].get(names.ANN_ALLOW_SHARED_IP) for i in idx}
            assert len(keys) == 1 and None not in keys, f"{ip} held by {idx} with sharing keys {keys}"


# (N, throughput, peak RSS in MB) of this session's backlogs, drawn against N after each one.
_BACKLOGS: list[tuple[int, float, float]] = []


def _draw_backlog(n: int, throughput: float, peak_mb: float) -> None:
    _BACKLOGS.append((n, throughput, peak_mb))
    benchfigures.write("controller-scale-throughput.svg", benchfigures.against_n(
        {"this run": [(b[0], b[1]) for b in _BACKLOGS]}, title="Controller: backlog throughput against its size",
        y_label="Services given IPs per second"))
    benchfigures.write("controller-scale-memory.svg", benchfigures.against_n(
        {"this run": [(b[0], b[2]) for b in _BACKLOGS]}, title="Controller: peak memory against the number of Services",
        y_label="peak RSS, MB"))


def _summary(record: dict) -> None:
    summary("SCALE-RESULT", record)


# -- the benchmarks ---------------------------------------------------------------------------

@pytest.mark.timeout(600)
def test_idle_memory(tmp_path):
    """The controller with no Services: its resident memory once ready and settled, the base that
    every Service adds to."""
    with bench_world() as (cp, api):
        proc = start_controller(cp, api, tmp_path, "controller")
        started = time.monotonic()
        try:
            ready = wait_health_ready(proc)
            time.sleep(IDLE_SETTLE)  # the first Lease renewals and informer watches are under way
            peak, rss = runtime.memory_kib(proc.proc.pid)
        finally:
            proc.stop()
        print(f"\nno Services: controller ready {ready - started:.1f} s after start; RSS {rss / 1024:.1f} MB, "
              f"peak {peak / 1024:.1f} MB")
        _summary({"run": "idle", "n": 0, "ready_s": round(ready - started, 2), "rss_mb": round(rss / 1024, 1),
                  "peak_rss_mb": round(peak / 1024, 1)})


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("n", SIZES)
def test_backlog_throughput(n, tmp_path):
    """N Services created first, the controller started after: time until every one has its IPs."""
    with bench_world() as (cp, api):
        print(f"\nbacklog of {n} Services (load average {os.getloadavg()[0]:.1f}):")
        rates = baseline(api)
        created, create_rate = create_services(api, list(range(n)), service_body)
        print(f"  created {n} Services at {create_rate:.0f}/s ({CREATE_THREADS} threads), no controller running")
        watch = IPWatch(api, wanted).start()
        metrics_reader_token(api)  # its set-up writes are not the controller's
        before = api_writes(api)
        proc = start_controller(cp, api, tmp_path, "controller")
        started = time.monotonic()
        try:
            ready = wait_health_ready(proc)
            done = watch.wait_all(set(created), timeout=max(600, n / 5), proc=proc)
            first = min(watch.first.values())
            quiet_after, after = wait_quiet(api, started)
            peak, rss = runtime.memory_kib(proc.proc.pid)
            ips = all_ips(api, ours)
        finally:
            watch.stop()
            proc.stop()
        check_allocation(ips, n)
        writes = after - before
        throughput = n / (done - ready)
        print(f"  controller: ready {ready - started:.1f} s after start, first IP {first - started:.1f} s, "
              f"all {n} with IPs {done - started:.1f} s; last write seen {seconds(quiet_after)} after start")
        print(f"  throughput (ready -> all): {throughput:.1f} Services/s = {throughput / rates['best']:.0%} of "
              f"the bare client's {rates['best']:.0f} writes/s (target >= {TARGET_FRACTION:.0%})")
        print_writes("writes until quiet", writes, n)
        print(f"  peak RSS {peak / 1024:.0f} MB (now {rss / 1024:.0f} MB; MetalLB measured {TARGET_MEMORY_MB} MB "
              "at 5,000)")
        _summary({"run": "backlog", "n": n, "create_rate": round(create_rate, 1),
                  "baseline": {k: round(v, 1) for k, v in rates.items()},
                  "ready_s": round(ready - started, 2), "first_ip_s": round(first - started, 2),
                  "all_s": round(done - started, 2), "last_write_s": rounded(quiet_after),
                  "throughput": round(throughput, 1), "fraction": round(throughput / rates["best"], 3),
                  "writes": write_kinds(writes), "writes_per_service": round(foreground(writes) / n, 2),
                  "peak_rss_mb": round(peak / 1024, 1)})
        benchfigures.write(f"controller-backlog-{n}.svg", benchfigures.ips_over_time(
            {"Services with their IPs": [t - started for t in watch.first.values()]},
            title=f"Controller: a backlog of {n:,} Services", marks=[Mark(ready - started, "ready")]))
        _draw_backlog(n, throughput, peak / 1024)


@pytest.mark.timeout(3600)
def test_live_creation_then_restart(tmp_path):
    """LIVE Services created while the controller runs (create -> IP per Service), then the
    controller SIGKILLed and a new one started on the same identity (a container restart):
    time to ready and to quiet, and not one IP changed."""
    n = LIVE
    with bench_world() as (cp, api):
        print(f"\nlive creation of {n} Services, then a restart (load average {os.getloadavg()[0]:.1f}):")
        rates = baseline(api)
        watch = IPWatch(api, wanted).start()
        proc = start_controller(cp, api, tmp_path, "controller")
        restarted: ControllerProcess | None = None
        try:
            started = time.monotonic()
            ready = wait_health_ready(proc)
            empty = runtime.memory_kib(proc.proc.pid)[1]
            print(f"  controller ready {ready - started:.1f} s after start (no Services), RSS {empty / 1024:.0f} MB")
            before = api_writes(api)
            t0 = time.monotonic()
            created, create_rate = create_services(api, list(range(n)), service_body)
            done = watch.wait_all(set(created), timeout=max(600, n / 5), proc=proc)
            latencies = sorted(watch.first[k] - created[k] for k in created)
            _, after = wait_quiet(api, t0)
            peak, rss = runtime.memory_kib(proc.proc.pid)
            ips = all_ips(api, ours)
            check_allocation(ips, n)
            writes = after - before
            writes.pop(("POST", "services", "", "201"), None)  # the benchmark's own creates
            p50 = statistics.median(latencies)
            p99 = percentile(latencies, 0.99)
            print(f"  created at {create_rate:.0f}/s ({CREATE_THREADS} threads); all {n} with IPs "
                  f"{done - t0:.1f} s after the first create")
            server = server_latencies(api)
            print(f"  create -> IP: p50 {p50:.2f} s, p99 {p99:.2f} s (target < {TARGET_LIVE_P99:.0f} s), "
                  f"max {latencies[-1]:.2f} s; as the objects record it (to the second): p50 "
                  f"{statistics.median(server):.0f} s, p99 {percentile(server, 0.99):.0f} s")
            print_writes("controller writes", writes, n)
            print(f"  peak RSS {peak / 1024:.0f} MB (now {rss / 1024:.0f} MB)")
            _summary({"run": "live", "n": n, "create_rate": round(create_rate, 1),
                      "baseline": {k: round(v, 1) for k, v in rates.items()},
                      "all_s": round(done - t0, 2), "p50_s": round(p50, 3), "p99_s": round(p99, 3),
                      "max_s": round(latencies[-1], 3), "empty_rss_mb": round(empty / 1024, 1),
                      "server_p50_s": statistics.median(server), "server_p99_s": percentile(server, 0.99),
                      "writes": write_kinds(writes),
                      "writes_per_service": round(foreground(writes) / n, 2), "peak_rss_mb": round(peak / 1024, 1)})
            benchfigures.write(f"controller-live-{n}.svg", benchfigures.ips_over_time(
                {"created": [created[k] - started for k in created],
                 "with their IPs": [watch.first[k] - started for k in created]},
                title=f"Controller: {n:,} Services created while it runs", marks=[Mark(ready - started, "ready")]))

            # -- the restart ------------------------------------------------------------------
            before = api_writes(api)
            proc.kill()  # SIGKILL, the one process this test started
            restarted = start_controller(cp, api, tmp_path, "controller-restarted")
            started = time.monotonic()
            ready = wait_health_ready(restarted)
            _, synced = wait_synced(restarted, n)
            quiet_after, after = wait_quiet(api, started)
            peak, rss = runtime.memory_kib(restarted.proc.pid)
            again = all_ips(api, ours)
            changed = sorted(k for k in ips if again.get(k) != ips[k])
            writes = after - before
            print(f"  restart (SIGKILL, same identity): ready {ready - started:.1f} s (target < "
                  f"{TARGET_RESTART_READY:.0f} s), every Service synced {synced - started:.1f} s, last write "
                  f"after start: {seconds(quiet_after)}")
            print_writes("writes after the restart", writes, n)
            print(f"  IPs changed: {len(changed)} of {len(ips)}; peak RSS {peak / 1024:.0f} MB")
            _summary({"run": "restart", "n": n, "ready_s": round(ready - started, 2),
                      "synced_s": round(synced - started, 2), "last_write_s": rounded(quiet_after),
                      "writes": write_kinds(writes), "changed": len(changed), "peak_rss_mb": round(peak / 1024, 1)})
            assert not changed, f"{len(changed)} Services' IPs changed, e.g. {changed[:5]}"
            assert len(again) == n
        finally:
            watch.stop()
            proc.stop()
            if restarted is not None:
                restarted.stop()
