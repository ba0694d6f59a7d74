"""Controller scale against one real kube-apiserver: throughput on a backlog, live creation,
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

import contextlib
import ipaddress
import json
import os
import re
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from leifur.kube import timestamps
from leifur.kube.client import request, send
from leifur.kube.informer import Informer
from leifur.model import names
from leifur.model.objects import key_of
from leifur_dev import benchfigures, controlplane, runtime
from leifur_dev.cluster import ControllerProcess, install_crds, metrics_reader_token, wait_for
from leifur_dev.svgplot import Mark

pytestmark = [pytest.mark.benchmark, pytest.mark.controlplane]

SIZES = [int(n) for n in os.environ.get("LEIFUR_SCALE_SIZES", "1000,5000").split(",") if n.strip()]
if os.environ.get("LEIFUR_SCALE_MAX"):
    SIZES.append(int(os.environ["LEIFUR_SCALE_MAX"]))
LIVE = int(os.environ.get("LEIFUR_SCALE_LIVE", "5000"))
CREATE_THREADS = int(os.environ.get("LEIFUR_SCALE_CREATE_THREADS", "8"))
BASELINE_THREADS = (1, 4, 8, 16)
BASELINE_SECONDS = float(os.environ.get("LEIFUR_SCALE_BASELINE_SECONDS", "4"))
NAMESPACES = 10

# The IPv4 ClusterIPs of the default /24 hold about 250 Services: the mix with IPv4 is the first 200.
V4_SERVICES = 200
POOLS = {"bench-v4": ["203.0.113.0/24"], "bench-v4-b": ["192.0.2.0/24"], "bench-v6": ["2001:db8:1::/112"],
         "bench-v6-b": ["2001:db8:2::/112"]}
REQUESTED_V4 = ipaddress.ip_address("203.0.113.200")  # far above what the lowest-free search reaches
REQUESTED_V6 = ipaddress.ip_address("2001:db8:1::8000")
MERGE = "application/merge-patch+json"
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
# Writes that are not the allocation's: the Lease renewals, the metrics port's token checks, and
# the API server's own (ClusterIP IPAddress objects, the kubernetes Service's endpoints).
BACKGROUND = {"leases", "tokenreviews", "subjectaccessreviews", "ipaddresses", "endpoints", "endpointslices"}

# Targets of issue 16, printed beside the figures (never asserted).
TARGET_FRACTION = 0.5
TARGET_LIVE_P99 = 2.0
TARGET_RESTART_READY = 10.0
TARGET_MEMORY_MB = 108


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


def ingress_ips(obj: dict) -> list[str]:
    return [e["ip"] for e in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if e.get("ip")]


# -- the API server ---------------------------------------------------------------------------

def api_client_for(kubeconfig: Path, pool: int = 48) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = pool  # one connection per thread, at 16 threads and more
    return client.ApiClient(cfg)


@contextlib.contextmanager
def world() -> Iterator[tuple[controlplane.ControlPlane, client.ApiClient]]:
    """A fresh API server with Leifur's CRDs, the benchmark's pools and namespaces."""
    cp = controlplane.start()
    try:
        api = api_client_for(cp.kubeconfig)
        install_crds(api)
        core = client.CoreV1Api(api)
        for ns in ["leifur-system", "bench-baseline", *(f"bench-{n}" for n in range(NAMESPACES))]:
            core.create_namespace({"metadata": {"name": ns}})
        custom = client.CustomObjectsApi(api)
        for name, addresses in POOLS.items():
            custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, {
                "apiVersion": names.API_VERSION, "kind": "IPAddressPool", "metadata": {"name": name},
                "spec": {"addresses": addresses}})
        yield cp, api
    finally:
        cp.stop()


def _retrying(fn, tries: int = 5):
    for attempt in range(tries):
        try:
            return fn()
        except ApiException as e:
            if e.status not in (429, 500, 503, 504) or attempt == tries - 1:
                raise
        except OSError:
            if attempt == tries - 1:
                raise
        time.sleep(0.2 * (attempt + 1))
    return None


def create_services(api: client.ApiClient, indices: list[int], threads: int = CREATE_THREADS,
                    body=service_body) -> tuple[dict[str, float], float]:
    """Create the Services (POST, as kubectl would); returns when each create returned, and the rate."""
    created: dict[str, float] = {}

    def one(i: int) -> None:
        b = body(i)
        ns = b["metadata"]["namespace"]
        _retrying(lambda: request(api, "POST", f"/api/v1/namespaces/{ns}/services", body=b, timeout=30))
        created[f"{ns}/{b['metadata']['name']}"] = time.monotonic()

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, indices))
    return created, len(indices) / (time.monotonic() - start)


def api_writes(api: client.ApiClient) -> Counter:
    """The API server's own count of write requests: (verb, resource, subresource, code) -> count."""
    resp = send(api, "GET", "/metrics", query=None, body=None, content_type="text/plain", timeout=30)
    text = resp.read().decode()
    out: Counter = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, value = line[len("apiserver_request_total{"):].rsplit("} ", 1)
        d = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if d.get("verb") in WRITE_VERBS:
            out[(d["verb"], d.get("resource", ""), d.get("subresource", ""), d.get("code", ""))] += int(float(value))
    return out


def foreground(writes: Counter) -> int:
    return sum(n for (_verb, resource, _sub, _code), n in writes.items() if resource not in BACKGROUND)


def write_kinds(writes: Counter) -> dict[str, int]:
    kinds: dict[str, int] = defaultdict(int)
    for (verb, resource, sub, code), n in writes.items():
        if resource == "services" and verb == "PATCH":
            kinds["Service status" if sub == "status" else "Service metadata (finalizer, annotation)"] += n
        elif resource == "events":
            kinds["Event"] += n
        elif resource == names.POOLS:
            kinds["pool status" if sub == "status" else "pool metadata"] += n
        elif resource in BACKGROUND:
            kinds[f"({resource})"] += n
        else:
            kinds[f"{verb} {resource}{'/' + sub if sub else ''}"] += n
        if code == "409":
            kinds["of which 409 Conflict"] += n
    return dict(kinds)


def wait_quiet(api: client.ApiClient, since: float, quiet_for: float = 5.0, timeout: float = 300.0,
               interval: float = 0.5) -> tuple[float | None, Counter]:
    """Poll the API server's write counters until no write but the background ones for `quiet_for`
    seconds; returns (seconds from `since` to the last write seen while polling, None if there was
    none; the counters then)."""
    last = api_writes(api)
    began = time.monotonic()
    changed: float | None = None
    deadline = began + timeout
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = api_writes(api)
        if foreground(now) != foreground(last):
            changed = time.monotonic()
            last = now
        elif time.monotonic() - (changed or began) >= quiet_for:
            return (changed - since if changed is not None else None), now
    raise TimeoutError(f"writes did not stop within {timeout}s")


def seconds(t: float | None) -> str:
    return "none seen" if t is None else f"{t:.1f} s"


def rounded(t: float | None) -> float | None:
    return None if t is None else round(t, 2)


# -- watching for IPs -------------------------------------------------------------------------

class IPWatch:
    """A watch on all Services: when each first showed every IP it asks for."""

    def __init__(self, api: client.ApiClient) -> None:
        self.first: dict[str, float] = {}
        self.lock = threading.Lock()
        self.informer = Informer(api, "/api/v1/services", "bench-services", 30.0)
        self.informer.add_handler(self._seen, lambda _old, new: self._seen(new), None)

    def _seen(self, obj: dict) -> None:
        key = key_of(obj)
        i = index_of(key)
        if i is None or key in self.first:
            return
        if len(ingress_ips(obj)) >= len(expected_families(i)):
            with self.lock:
                self.first[key] = time.monotonic()

    def start(self) -> IPWatch:
        self.informer.start()
        assert self.informer.wait_for_sync(60)
        return self

    def wait_all(self, keys: set[str], timeout: float, proc: ControllerProcess | None = None) -> float:
        """The time the last of `keys` got its IPs."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                missing = keys - self.first.keys()
            if not missing:
                return max(self.first[k] for k in keys)
            if proc is not None and not proc.alive():
                raise AssertionError(f"controller exited:\n{proc.log_tail(40)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} Services without their IPs after {timeout}s, "
                                   f"e.g. {sorted(missing)[:5]}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.informer.stop()


# -- the checks -------------------------------------------------------------------------------

def all_ips(api: client.ApiClient) -> dict[str, list[str]]:
    """Every benchmark Service's ingress IPs, from a fresh LIST."""
    out = {}
    for s in request(api, "GET", "/api/v1/services", timeout=120)["items"]:
        key = key_of(s)
        if index_of(key) is not None:
            out[key] = ingress_ips(s)
    return out


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


# -- the baseline -----------------------------------------------------------------------------

BASELINE_SERVICES = 16 * 25


def baseline_body(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"b{i:04d}", "namespace": "bench-baseline"},
            # Another class: no controller of ours would touch them.
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/not-leifur",
                     "allocateLoadBalancerNodePorts": False, "selector": {"app": "b"},
                     "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                     "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}}


def baseline(api: client.ApiClient) -> dict[str, float]:
    """Status writes per second of a bare client loop (status.loadBalancer.ingress merge patches,
    each a real change) at 1/4/8/16 threads, each thread on Services of its own; then the typed
    client (which decodes every answer into a V1Service, as the controller's writer does) at the
    best thread count. The Services are deleted afterwards."""
    create_services(api, list(range(BASELINE_SERVICES)), body=baseline_body)
    core = client.CoreV1Api(api)

    def run(threads: int, typed: bool) -> float:
        stop_at = time.monotonic() + BASELINE_SECONDS
        counts = [0] * threads

        def loop(t: int) -> None:
            mine = [f"b{i:04d}" for i in range(t, BASELINE_SERVICES, threads)]
            n = 0
            while time.monotonic() < stop_at:
                name = mine[n % len(mine)]
                body = {"status": {"loadBalancer": {"ingress": [
                    {"ip": f"2001:db8:3::{(n // len(mine)) % 250 + 1:x}", "ipMode": "VIP"}]}}}
                if typed:
                    core.patch_namespaced_service_status(name, "bench-baseline", body, _content_type=MERGE)
                else:
                    request(api, "PATCH", f"/api/v1/namespaces/bench-baseline/services/{name}/status",
                            body=body, content_type=MERGE, timeout=30)
                n += 1
            counts[t] = n

        start = time.monotonic()
        ts = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts) / (time.monotonic() - start)

    rates = {f"plain x{t}": run(t, typed=False) for t in BASELINE_THREADS}
    best = max(BASELINE_THREADS, key=lambda t: rates[f"plain x{t}"])
    rates[f"typed x{best}"] = run(best, typed=True)
    rates["best"] = max(rates.values())
    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(lambda i: request(api, "DELETE", f"/api/v1/namespaces/bench-baseline/services/b{i:04d}",
                                        timeout=30), range(BASELINE_SERVICES)))
    print("  bare client, Service status writes/s: "
          + ", ".join(f"{k} {v:.0f}" for k, v in rates.items() if k != "best"))
    return rates


def start_controller(cp: controlplane.ControlPlane, api: client.ApiClient, tmp_path: Path,
                     name: str) -> ControllerProcess:
    # Production's log level (the integration tests' helper asks for debug; the last flag wins).
    return ControllerProcess(cp.kubeconfig, tmp_path / f"{name}.log", "--log-level", "info",
                             token=metrics_reader_token(api), identity="bench").start()


def wait_health_ready(proc: ControllerProcess, timeout: float = 300) -> float:
    """Poll the health port's /readyz (caches synced, allocations rebuilt, workers started)."""
    def ready() -> bool:
        if not proc.alive():
            raise AssertionError(f"controller exited:\n{proc.log_tail(40)}")
        try:
            return proc.get_health("/readyz")[0] == 200
        except OSError:
            return False

    wait_for(ready, timeout, interval=0.02, what="controller /readyz")
    return time.monotonic()


def print_writes(what: str, writes: Counter, n: int) -> None:
    kinds = write_kinds(writes)
    total = foreground(writes)
    print(f"  {what}: {total} writes, {total / n:.2f} per Service: "
          + ", ".join(f"{k} {v} ({v / n:.2f})" for k, v in sorted(kinds.items())))


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
    """One JSON line per run, for the tables in docs/benchmarks.md; with the machine's load, since
    the machine may be shared (the bare client's rate in the same run is the other yardstick)."""
    record["loadavg_1m"] = round(os.getloadavg()[0], 1)
    print("SCALE-RESULT " + json.dumps(record))


# -- the benchmarks ---------------------------------------------------------------------------

@pytest.mark.timeout(3600)
@pytest.mark.parametrize("n", SIZES)
def test_backlog_throughput(n, tmp_path):
    """N Services created first, the controller started after: time until every one has its IPs."""
    with world() as (cp, api):
        print(f"\nbacklog of {n} Services (load average {os.getloadavg()[0]:.1f}):")
        rates = baseline(api)
        created, create_rate = create_services(api, list(range(n)))
        print(f"  created {n} Services at {create_rate:.0f}/s ({CREATE_THREADS} threads), no controller running")
        watch = IPWatch(api).start()
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
            ips = all_ips(api)
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
        print(f"  peak RSS {peak / 1024:.0f} MB (now {rss / 1024:.0f} MB; MetalLB measured 108 MB at 5,000)")
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
    with world() as (cp, api):
        print(f"\nlive creation of {n} Services, then a restart (load average {os.getloadavg()[0]:.1f}):")
        rates = baseline(api)
        watch = IPWatch(api).start()
        proc = start_controller(cp, api, tmp_path, "controller")
        restarted: ControllerProcess | None = None
        try:
            started = time.monotonic()
            ready = wait_health_ready(proc)
            empty = runtime.memory_kib(proc.proc.pid)[1]
            print(f"  controller ready {ready - started:.1f} s after start (no Services), RSS {empty / 1024:.0f} MB")
            before = api_writes(api)
            t0 = time.monotonic()
            created, create_rate = create_services(api, list(range(n)))
            done = watch.wait_all(set(created), timeout=max(600, n / 5), proc=proc)
            latencies = sorted(watch.first[k] - created[k] for k in created)
            _, after = wait_quiet(api, t0)
            peak, rss = runtime.memory_kib(proc.proc.pid)
            ips = all_ips(api)
            check_allocation(ips, n)
            writes = after - before
            writes.pop(("POST", "services", "", "201"), None)  # the benchmark's own creates
            p50 = statistics.median(latencies)
            p99 = latencies[int(0.99 * (len(latencies) - 1))]
            print(f"  created at {create_rate:.0f}/s ({CREATE_THREADS} threads); all {n} with IPs "
                  f"{done - t0:.1f} s after the first create")
            server = server_latencies(api)
            print(f"  create -> IP: p50 {p50:.2f} s, p99 {p99:.2f} s (target < {TARGET_LIVE_P99:.0f} s), "
                  f"max {latencies[-1]:.2f} s; as the objects record it (to the second): p50 "
                  f"{statistics.median(server):.0f} s, p99 {server[int(0.99 * (len(server) - 1))]:.0f} s")
            print_writes("controller writes", writes, n)
            print(f"  peak RSS {peak / 1024:.0f} MB (now {rss / 1024:.0f} MB)")
            _summary({"run": "live", "n": n, "create_rate": round(create_rate, 1),
                      "baseline": {k: round(v, 1) for k, v in rates.items()},
                      "all_s": round(done - t0, 2), "p50_s": round(p50, 3), "p99_s": round(p99, 3),
                      "max_s": round(latencies[-1], 3), "empty_rss_mb": round(empty / 1024, 1),
                      "server_p50_s": statistics.median(server), "server_p99_s": server[int(0.99 * (len(server) - 1))],
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
            again = all_ips(api)
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


def wait_synced(proc: ControllerProcess, n: int, timeout: float = 300) -> tuple[int, float]:
    """Until the controller's Service queue has synced every Service at least once and is empty
    (its own metrics); returns (syncs, when)."""
    def synced() -> int | None:
        text = proc.get("/metrics")[1]
        count = re.search(r'^leifur_workqueue_work_duration_seconds_count\{name="services"\} (\S+)$', text, re.M)
        depth = re.search(r'^leifur_workqueue_depth\{name="services"\} (\S+)$', text, re.M)
        if count and depth and float(count.group(1)) >= n and float(depth.group(1)) == 0:
            return int(float(count.group(1)))
        return None

    syncs = wait_for(synced, timeout, interval=0.2, what="every Service synced")
    return syncs, time.monotonic()
