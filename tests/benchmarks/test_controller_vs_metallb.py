"""Leifur's controller and MetalLB's (v0.15.3, built from its Go module) side by side, in one run
on one real kube-apiserver (issues 14 and 16): how long each takes to give N Services their IPs,
on a backlog and created live, its peak memory, and its restart.

LEIFUR_BENCHMARKS=1 .venv/bin/pytest tests/benchmarks/test_controller_vs_metallb.py -s

N = LEIFUR_SCALE_SIZES (default 1000,5000). Each controller has a loadBalancerClass of its own
(Leifur's runs with --load-balancer-class, MetalLB's with --lb-class) and an IPv6 pool of its own
(a /112 of 2001:db8::/32 each, so that address space is no limit); the Services are IPv6
SingleStack, one IP each, no annotations, so that both do the same work. For each N, and each
controller in turn (MetalLB first at the first N, Leifur first at the next, and so on, so that
neither always meets the younger etcd):

(a) backlog: N Services created, then the controller started: ready, and all with IPs;
(c) its peak RSS (VmHWM) once every Service has its IP and the writes stopped;
(d) restart: SIGKILL, started again with N allocated: ready, every Service loaded (Leifur: its
    queue has synced every Service; MetalLB: its allocator holds N addresses), the last write,
    the writes after the restart, and the IPs changed (every Service checked, must be 0);
(b) live: the Services deleted, a fresh controller started, N created at the same paced rate
    (LEIFUR_VS_CREATE_RATE per second, default 50, from the same 8 creating threads): create -> IP
    p50/p99 and when all had IPs; its peak RSS again.

Each side's Services are deleted (and waited for) before the other side's phase, with that
side's controller still running to release them, so the two never load the API server at once.
The bare client's Service status-write rate, measured in the same run before each N, is the
yardstick. Correctness is asserted (one IP from the side's own pool per Service, none held
twice, none changed by a restart); times are printed with the targets of issue 16, never asserted.
"""

from __future__ import annotations

import ipaddress
import os
import re
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from leifur.model import names
from leifur_dev import controlplane, metallb, runtime
from leifur_dev.cluster import ControllerProcess, metrics_reader_token, wait_for
from leifur_dev.scale import (
    CREATE_THREADS,
    SIZES,
    TARGET_LIVE_P99,
    TARGET_RESTART_READY,
    IPWatch,
    all_ips,
    api_writes,
    baseline,
    create_services,
    delete_services,
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

pytestmark = [pytest.mark.benchmark, pytest.mark.controlplane]

CREATE_RATE = float(os.environ.get("LEIFUR_VS_CREATE_RATE", "50"))
NAMESPACES = 10
METALLB_NAMESPACE = "metallb-system"
LEIFUR_CLASS = f"{names.GROUP}/bench"
METALLB_CLASS = f"{metallb.GROUP}/bench"
LEIFUR_POOL = "2001:db8:10::/112"
METALLB_POOL = "2001:db8:20::/112"


# -- the two sides ----------------------------------------------------------------------------

@dataclass
class Side:
    """One controller, its class, pool and Services ("<prefix>-<i % 10>/s<i>")."""

    name: str
    prefix: str
    lb_class: str
    pool: str
    cp: controlplane.ControlPlane
    api: client.ApiClient
    tmp: Path
    runs: int = 0

    def key(self, i: int) -> str:
        return f"{self.prefix}-{i % NAMESPACES}/s{i:05d}"

    def ours(self, key: str) -> bool:
        return re.fullmatch(rf"{self.prefix}-\d+/s\d+", key) is not None

    def wanted(self, key: str) -> int | None:
        return 1 if self.ours(key) else None

    def body(self, i: int) -> dict:
        ns, name = self.key(i).split("/")
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": self.lb_class,
                         "allocateLoadBalancerNodePorts": False, "selector": {"app": name},
                         "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                         "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}}

    def check(self, ips: dict[str, list[str]], n: int) -> None:
        """One IP per Service, from this side's pool, none held twice."""
        assert len(ips) == n, f"{self.name}: {len(ips)} Services listed, {n} created"
        pool = ipaddress.ip_network(self.pool)
        for key, got in ips.items():
            assert len(got) == 1 and ipaddress.ip_address(got[0]) in pool, f"{self.name}: {key} holds {got}"
        held = Counter(ip for got in ips.values() for ip in got)
        twice = [ip for ip, count in held.items() if count > 1]
        assert not twice, f"{self.name}: IPs held twice, e.g. {twice[:5]}"

    # What differs between the two controllers.
    def start(self) -> None:
        raise NotImplementedError

    def wait_ready(self) -> float:
        raise NotImplementedError

    def wait_loaded(self, n: int) -> float:
        raise NotImplementedError

    @property
    def proc(self):
        raise NotImplementedError

    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class Leifur(Side):
    _proc: ControllerProcess | None = None

    @property
    def proc(self):
        return self._proc

    def start(self) -> None:
        self.runs += 1
        self._proc = start_controller(self.cp, self.api, self.tmp, f"leifur-{self.runs}",
                                      "--load-balancer-class", self.lb_class)

    def wait_ready(self) -> float:
        assert self._proc is not None
        return wait_health_ready(self._proc)

    def wait_loaded(self, n: int) -> float:
        assert self._proc is not None
        return wait_synced(self._proc, n)[1]


class MetalLB(Side):
    _proc: metallb.MetalLBController | None = None

    @property
    def proc(self):
        return self._proc

    def start(self) -> None:
        self.runs += 1
        self._proc = metallb.MetalLBController(self.cp.kubeconfig, self.tmp / f"metallb-{self.runs}.log",
                                               METALLB_NAMESPACE, lb_class=self.lb_class).start()

    def wait_ready(self) -> float:
        assert self._proc is not None
        self._proc.wait_ready(timeout=300, interval=0.02)
        return time.monotonic()

    def wait_loaded(self, n: int) -> float:
        proc = self._proc
        assert proc is not None

        def loaded() -> bool:
            if not proc.alive():
                raise RuntimeError(f"MetalLB's controller exited:\n{proc.log_tail()}")
            try:
                return proc.addresses_in_use() >= n
            except OSError:
                return False

        wait_for(loaded, 300, interval=0.1, what=f"MetalLB's allocator holds {n} addresses")
        return time.monotonic()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One API server for the whole run, with both sides' classes, pools and namespaces."""
    tmp = tmp_path_factory.mktemp("vs-metallb")
    namespaces = [f"{prefix}-{n}" for prefix in ("leifur", "metallb") for n in range(NAMESPACES)]
    with world({"vs-leifur": [LEIFUR_POOL]}, [METALLB_NAMESPACE, *namespaces]) as (cp, api):
        metallb.install_crds(api)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            metallb.GROUP, metallb.VERSION, METALLB_NAMESPACE, metallb.POOLS,
            metallb.pool("vs-metallb", METALLB_NAMESPACE, [METALLB_POOL]))
        metrics_reader_token(api)  # its set-up writes are nobody's
        yield {"MetalLB": MetalLB("MetalLB", "metallb", METALLB_CLASS, METALLB_POOL, cp, api, tmp),
               "Leifur": Leifur("Leifur", "leifur", LEIFUR_CLASS, LEIFUR_POOL, cp, api, tmp)}


# -- the phases -------------------------------------------------------------------------------

def load() -> float:
    return round(os.getloadavg()[0], 1)


def backlog_and_restart(side: Side, n: int) -> dict:
    """(a) a backlog of N, (c) peak RSS, (d) SIGKILL and start again; the Services deleted after."""
    api = side.api
    indices = list(range(n))
    keys = {side.key(i) for i in indices}
    out: dict = {"load_before": load()}
    _, out["backlog_create_rate"] = create_services(api, indices, side.body)
    watch = IPWatch(api, side.wanted).start()
    try:
        before = api_writes(api)
        started = time.monotonic()
        side.start()
        ready = side.wait_ready()
        done = watch.wait_all(keys, timeout=max(600, n / 5), proc=side.proc)
        watch.stop()
        quiet_after, after = wait_quiet(api, started)
        peak = runtime.memory_kib(side.pid())[0]
        ips = all_ips(api, side.ours)
        side.check(ips, n)
        writes = after - before
        out.update(backlog_ready_s=ready - started, backlog_all_s=done - started,
                   throughput=n / (done - ready), backlog_last_write_s=quiet_after,
                   backlog_writes=write_kinds(writes), backlog_writes_per_service=foreground(writes) / n,
                   backlog_peak_mb=peak / 1024)
        print(f"  {side.name} backlog of {n}: ready {ready - started:.1f} s, all with IPs {done - started:.1f} s "
              f"after start ({out['throughput']:.0f} Services/s from ready); last write {seconds(quiet_after)}; "
              f"peak RSS {peak / 1024:.0f} MB")
        print_writes(f"{side.name} backlog writes", writes, n)

        before = api_writes(api)
        side.kill()  # SIGKILL, the process this benchmark started
        started = time.monotonic()
        side.start()
        # Its writes are counted from the first poll on, while it loads (MetalLB rewrites as it goes).
        with ThreadPoolExecutor(1) as pool:
            loading = pool.submit(lambda: (side.wait_ready(), side.wait_loaded(n)))
            quiet_after, after = wait_quiet(api, started, interval=0.2, counts=before, done=loading.done)
            ready, loaded = loading.result()
        peak = runtime.memory_kib(side.pid())[0]
        again = all_ips(api, side.ours)
        changed = sorted(k for k in ips if again.get(k) != ips[k])
        writes = after - before
        out.update(restart_ready_s=ready - started, restart_loaded_s=loaded - started,
                   restart_last_write_s=quiet_after, restart_writes=foreground(writes),
                   restart_write_kinds=write_kinds(writes), changed=len(changed), restart_peak_mb=peak / 1024)
        print(f"  {side.name} restart (SIGKILL) with {n}: ready {ready - started:.1f} s, all loaded "
              f"{loaded - started:.1f} s, last write {seconds(quiet_after)}; IPs changed {len(changed)} of {len(ips)}; "
              f"peak RSS {peak / 1024:.0f} MB")
        print_writes(f"{side.name} writes after the restart", writes, n)
        assert not changed, f"{side.name}: {len(changed)} Services' IPs changed, e.g. {changed[:5]}"
        assert len(again) == n
        delete_services(api, keys)
    finally:
        watch.stop()
        side.stop()
    return out


def live(side: Side, n: int) -> dict:
    """(b) N Services created at CREATE_RATE while a fresh controller runs; then deleted."""
    api = side.api
    indices = list(range(n))
    out: dict = {}
    watch = IPWatch(api, side.wanted).start()
    try:
        side.start()
        side.wait_ready()
        out["empty_mb"] = runtime.memory_kib(side.pid())[1] / 1024
        before = api_writes(api)
        t0 = time.monotonic()
        created, out["live_create_rate"] = create_services(api, indices, side.body, rate=CREATE_RATE)
        done = watch.wait_all(set(created), timeout=max(600, n / 5), proc=side.proc)
        latencies = sorted(watch.first[k] - created[k] for k in created)
        _, after = wait_quiet(api, t0)
        peak = runtime.memory_kib(side.pid())[0]
        side.check(all_ips(api, side.ours), n)
        writes = after - before
        writes.pop(("POST", "services", "", "201"), None)  # the benchmark's own creates
        out.update(live_all_s=done - t0, p50_s=statistics.median(latencies), p99_s=percentile(latencies, 0.99),
                   max_s=latencies[-1], live_peak_mb=peak / 1024, live_writes=write_kinds(writes),
                   live_writes_per_service=foreground(writes) / n)
        print(f"  {side.name} live {n} at {out['live_create_rate']:.0f}/s: all with IPs {done - t0:.2f} s after the "
              f"first create; create -> IP p50 {out['p50_s']:.2f} s, p99 {out['p99_s']:.2f} s, max "
              f"{latencies[-1]:.2f} s; peak RSS {peak / 1024:.0f} MB")
        print_writes(f"{side.name} live writes", writes, n)
        delete_services(api, created)
    finally:
        watch.stop()
        side.stop()
    out["load_after"] = load()
    return out


# -- the table --------------------------------------------------------------------------------

ROWS = [
    ("backlog: Services created", lambda r: f"{r['backlog_create_rate']:.0f}/s, no controller"),
    ("backlog: ready after start", lambda r: f"{r['backlog_ready_s']:.1f} s"),
    ("backlog: all have IPs after start", lambda r: f"{r['backlog_all_s']:.1f} s"),
    ("backlog: throughput (ready -> all)", lambda r: f"{r['throughput']:.0f} Services/s"),
    ("backlog: writes per Service", lambda r: f"{r['backlog_writes_per_service']:.2f}"),
    ("peak RSS after the backlog", lambda r: f"{r['backlog_peak_mb']:.0f} MB"),
    ("restart (SIGKILL): ready", lambda r: f"{r['restart_ready_s']:.1f} s"),
    ("restart: every Service loaded", lambda r: f"{r['restart_loaded_s']:.1f} s"),
    ("restart: last write after start", lambda r: seconds(r["restart_last_write_s"])),
    ("restart: writes after", lambda r: f"{r['restart_writes']}"),
    ("restart: IPs changed", lambda r: f"{r['changed']}"),
    ("restart: peak RSS", lambda r: f"{r['restart_peak_mb']:.0f} MB"),
    ("live: created at", lambda r: f"{r['live_create_rate']:.0f}/s"),
    ("live: all have IPs after the first create", lambda r: f"{r['live_all_s']:.2f} s"),
    ("live: create -> IP p50 / p99 / max", lambda r: f"{r['p50_s']:.2f} / {r['p99_s']:.2f} / {r['max_s']:.2f} s"),
    ("live: writes per Service", lambda r: f"{r['live_writes_per_service']:.2f}"),
    ("live: RSS empty / peak", lambda r: f"{r['empty_mb']:.0f} / {r['live_peak_mb']:.0f} MB"),
]


def print_table(n: int, results: dict[str, dict], rates: dict[str, float]) -> None:
    width = max(len(label) for label, _ in ROWS)
    print(f"\n  {n} Services, one API server; bare client {rates['best']:.0f} status writes/s")
    print(f"  {'':<{width}} | {'MetalLB':>22} | {'Leifur':>22}")
    for label, cell in ROWS:
        print(f"  {label:<{width}} | {cell(results['MetalLB']):>22} | {cell(results['Leifur']):>22}")
    m, le = results["MetalLB"], results["Leifur"]
    print(f"  issue 16: live all sooner than MetalLB: {le['live_all_s'] < m['live_all_s']}; "
          f"live p99 < {TARGET_LIVE_P99:.0f} s: {le['p99_s'] < TARGET_LIVE_P99}; restart ready < "
          f"{TARGET_RESTART_READY:.0f} s: {le['restart_ready_s'] < TARGET_RESTART_READY}; memory below MetalLB's: "
          f"{max(le['backlog_peak_mb'], le['live_peak_mb']) < max(m['backlog_peak_mb'], m['live_peak_mb'])}")


# -- the benchmark ----------------------------------------------------------------------------

@pytest.mark.timeout(3600)
@pytest.mark.parametrize("n", SIZES)
def test_leifur_and_metallb_side_by_side(lab, n):
    """Both controllers on one API server, one after the other, at N Services."""
    order = ["MetalLB", "Leifur"] if SIZES.index(n) % 2 == 0 else ["Leifur", "MetalLB"]
    print(f"\n{n} Services, {' then '.join(order)} (load average {load()}):")
    rates = baseline(next(iter(lab.values())).api)
    results: dict[str, dict] = {}
    for name in order:
        side = lab[name]
        results[name] = backlog_and_restart(side, n) | live(side, n)
    print_table(n, results, rates)
    summary("VS-METALLB-RESULT", {"n": n, "order": order, "create_threads": CREATE_THREADS,
                                  "live_rate": CREATE_RATE, "baseline": {k: round(v, 1) for k, v in rates.items()},
                                  **{name: {k: (rounded(v) if isinstance(v, float) else v) for k, v in r.items()}
                                     for name, r in results.items()}})
