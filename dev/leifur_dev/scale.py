"""What the controller benchmarks share: one real API server, Services created in bulk, the API
server's own count of writes, a watch that times when each Service got its IPs, the bare client's
status-write rate as the yardstick, and the leifur-controller run as in production.

Used by tests/benchmarks/test_controller_scale.py (Leifur's controller alone) and
tests/benchmarks/test_controller_vs_metallb.py (Leifur's and MetalLB's side by side).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from leifur.kube.client import request, send
from leifur.kube.informer import Informer
from leifur.model import names
from leifur.model.objects import key_of
from leifur_dev import controlplane
from leifur_dev.cluster import ControllerProcess, install_crds, metrics_reader_token, wait_for

# The Service counts the controller benchmarks run at (LEIFUR_SCALE_SIZES, comma-separated).
SIZES = [int(n) for n in os.environ.get("LEIFUR_SCALE_SIZES", "1000,5000").split(",") if n.strip()]
CREATE_THREADS = int(os.environ.get("LEIFUR_SCALE_CREATE_THREADS", "8"))
# Targets of issue 16, printed beside the figures (never asserted).
TARGET_FRACTION = 0.5  # of the bare client's status-write rate, on a backlog
TARGET_LIVE_P99 = 2.0  # seconds from create to IP
TARGET_RESTART_READY = 10.0  # seconds
TARGET_MEMORY_MB = 108  # MetalLB's controller at 5,000 Services, as issue 16 measured it
BASELINE_THREADS = (1, 4, 8, 16)
BASELINE_SECONDS = float(os.environ.get("LEIFUR_SCALE_BASELINE_SECONDS", "4"))
BASELINE_NAMESPACE = "bench-baseline"
MERGE = "application/merge-patch+json"
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
# Writes that are not the allocation's: the Lease renewals, the metrics port's token checks, and
# the API server's own (ClusterIP IPAddress objects, the kubernetes Service's endpoints).
BACKGROUND = {"leases", "tokenreviews", "subjectaccessreviews", "ipaddresses", "endpoints", "endpointslices"}

Body = Callable[[int], dict]


class Controller(Protocol):
    """What the benchmarks need of a controller process, Leifur's or MetalLB's."""

    def alive(self) -> bool: ...

    def log_tail(self, lines: int = 40) -> str: ...


def ingress_ips(obj: dict) -> list[str]:
    return [e["ip"] for e in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if e.get("ip")]


def percentile(sorted_values: list[float], q: float) -> float:
    """The value at fraction `q` of an ascending list (nearest rank below, as the figures so far)."""
    return sorted_values[int(q * (len(sorted_values) - 1))]


# -- the API server ---------------------------------------------------------------------------

def api_client_for(kubeconfig: Path, pool: int = 48) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = pool  # one connection per thread, at 16 threads and more
    return client.ApiClient(cfg)


@contextlib.contextmanager
def world(pools: dict[str, list[str]], namespaces: Iterable[str],
          ) -> Iterator[tuple[controlplane.ControlPlane, client.ApiClient]]:
    """A fresh API server with Leifur's CRDs, these Leifur pools (name -> addresses) and namespaces
    (and the controller's and the baseline's)."""
    cp = controlplane.start()
    try:
        api = api_client_for(cp.kubeconfig)
        install_crds(api)
        core = client.CoreV1Api(api)
        for ns in ["leifur-system", BASELINE_NAMESPACE, *namespaces]:
            core.create_namespace({"metadata": {"name": ns}})
        custom = client.CustomObjectsApi(api)
        for name, addresses in pools.items():
            custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, {
                "apiVersion": names.API_VERSION, "kind": "IPAddressPool", "metadata": {"name": name},
                "spec": {"addresses": addresses}})
        yield cp, api
    finally:
        cp.stop()


def retrying(fn: Callable[[], Any], tries: int = 5) -> Any:
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


def create_services(api: client.ApiClient, indices: list[int], body: Body, threads: int = CREATE_THREADS,
                    rate: float | None = None) -> tuple[dict[str, float], float]:
    """Create the Services (POST, as kubectl would), at most `rate` per second if given; returns
    when each create returned, and the rate reached."""
    created: dict[str, float] = {}
    start = time.monotonic()

    def one(pos_i: tuple[int, int]) -> None:
        pos, i = pos_i
        if rate:
            time.sleep(max(0.0, start + pos / rate - time.monotonic()))
        b = body(i)
        ns = b["metadata"]["namespace"]
        retrying(lambda: request(api, "POST", f"/api/v1/namespaces/{ns}/services", body=b, timeout=30))
        created[f"{ns}/{b['metadata']['name']}"] = time.monotonic()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, enumerate(indices)))
    return created, len(indices) / (time.monotonic() - start)


def delete_services(api: client.ApiClient, keys: Iterable[str], threads: int = CREATE_THREADS,
                    timeout: float = 600) -> None:
    """Delete these Services ("namespace/name") and wait until the API server has none of them left
    (a finalizer is removed by whichever controller still runs)."""
    keys = set(keys)

    def one(key: str) -> None:
        ns, name = key.split("/", 1)
        with contextlib.suppress(ApiException):  # 404: gone already
            retrying(lambda: request(api, "DELETE", f"/api/v1/namespaces/{ns}/services/{name}", timeout=30))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, sorted(keys)))
    namespaces = {k.split("/", 1)[0] for k in keys}

    def gone() -> bool:
        left = {key_of(s) for ns in namespaces
                for s in request(api, "GET", f"/api/v1/namespaces/{ns}/services", timeout=120)["items"]}
        return not left & keys

    wait_for(gone, timeout, interval=1.0, what=f"{len(keys)} Services deleted")


# -- counting writes --------------------------------------------------------------------------

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
    """The writes by what they change (Leifur patches a Service, MetalLB updates it: both count)."""
    kinds: dict[str, int] = defaultdict(int)
    for (verb, resource, sub, code), n in writes.items():
        if resource == "services" and verb in ("PATCH", "PUT"):
            kinds["Service status" if sub == "status" else "Service metadata (finalizer, annotation)"] += n
        elif resource == "events":
            kinds["Event"] += n
        elif resource == names.POOLS:  # MetalLB's pools are called the same
            kinds["pool status" if sub == "status" else "pool metadata"] += n
        elif resource in BACKGROUND:
            kinds[f"({resource})"] += n
        else:
            kinds[f"{verb} {resource}{'/' + sub if sub else ''}"] += n
        if code == "409":
            kinds["of which 409 Conflict"] += n
    return dict(kinds)


def wait_quiet(api: client.ApiClient, since: float, quiet_for: float = 5.0, timeout: float = 300.0,
               interval: float = 0.5, counts: Counter | None = None,
               done: Callable[[], bool] | None = None) -> tuple[float | None, Counter]:
    """Poll the API server's write counters until no write but the background ones for `quiet_for`
    seconds; returns (seconds from `since` to the last write seen while polling, None if there was
    none; the counters then). With `counts` (taken earlier), a write since then is seen at the first
    poll; with `done`, the quiet only counts once it says so (a controller still loading may be
    silent for a while)."""
    last = api_writes(api) if counts is None else counts
    began = time.monotonic()
    changed: float | None = None
    deadline = began + timeout
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = api_writes(api)
        if foreground(now) != foreground(last):
            changed = time.monotonic()
            last = now
        elif time.monotonic() - (changed or began) >= quiet_for and (done is None or done()):
            return (changed - since if changed is not None else None), now
    raise TimeoutError(f"writes did not stop within {timeout}s")


def print_writes(what: str, writes: Counter, n: int) -> None:
    kinds = write_kinds(writes)
    total = foreground(writes)
    print(f"  {what}: {total} writes, {total / n:.2f} per Service: "
          + ", ".join(f"{k} {v} ({v / n:.2f})" for k, v in sorted(kinds.items())))


def seconds(t: float | None) -> str:
    return "none seen" if t is None else f"{t:.1f} s"


def rounded(t: float | None) -> float | None:
    return None if t is None else round(t, 2)


def summary(tag: str, record: dict) -> None:
    """One JSON line per run, for the tables in docs/benchmarks.md; with the machine's load, since
    the machine may be shared (the bare client's rate in the same run is the other yardstick)."""
    record["loadavg_1m"] = round(os.getloadavg()[0], 1)
    print(f"{tag} " + json.dumps(record))


# -- watching for IPs -------------------------------------------------------------------------

class IPWatch:
    """A watch on all Services: when each first showed every IP it asks for. `wanted` says how
    many IPs a Service ("namespace/name") asks for, None if it is not the benchmark's."""

    def __init__(self, api: client.ApiClient, wanted: Callable[[str], int | None]) -> None:
        self.first: dict[str, float] = {}
        self.wanted = wanted
        self.lock = threading.Lock()
        self.informer = Informer(api, "/api/v1/services", "bench-services", 30.0)
        self.informer.add_handler(self._seen, lambda _old, new: self._seen(new), None)

    def _seen(self, obj: dict) -> None:
        key = key_of(obj)
        want = self.wanted(key)
        if want is None or key in self.first:
            return
        if len(ingress_ips(obj)) >= want:
            with self.lock:
                self.first[key] = time.monotonic()

    def start(self) -> IPWatch:
        self.informer.start()
        assert self.informer.wait_for_sync(60)
        return self

    def wait_all(self, keys: set[str], timeout: float, proc: Controller | None = None) -> float:
        """The time the last of `keys` got its IPs; fails at once if the controller `proc` exited."""
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


def all_ips(api: client.ApiClient, ours: Callable[[str], bool]) -> dict[str, list[str]]:
    """Every benchmark Service's ingress IPs, from a fresh LIST."""
    out = {}
    for s in request(api, "GET", "/api/v1/services", timeout=120)["items"]:
        key = key_of(s)
        if ours(key):
            out[key] = ingress_ips(s)
    return out


# -- the baseline -----------------------------------------------------------------------------

BASELINE_SERVICES = 16 * 25


def baseline_body(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"b{i:04d}", "namespace": BASELINE_NAMESPACE},
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
    create_services(api, list(range(BASELINE_SERVICES)), baseline_body)
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
                    core.patch_namespaced_service_status(name, BASELINE_NAMESPACE, body, _content_type=MERGE)
                else:
                    request(api, "PATCH", f"/api/v1/namespaces/{BASELINE_NAMESPACE}/services/{name}/status",
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
        list(pool.map(lambda i: request(api, "DELETE", f"/api/v1/namespaces/{BASELINE_NAMESPACE}/services/b{i:04d}",
                                        timeout=30), range(BASELINE_SERVICES)))
    print("  bare client, Service status writes/s: "
          + ", ".join(f"{k} {v:.0f}" for k, v in rates.items() if k != "best"))
    return rates


# -- Leifur's controller ----------------------------------------------------------------------

def start_controller(cp: controlplane.ControlPlane, api: client.ApiClient, tmp_path: Path,
                     name: str, *extra: str) -> ControllerProcess:
    # Production's log level (the integration tests' helper asks for debug; the last flag wins).
    return ControllerProcess(cp.kubeconfig, tmp_path / f"{name}.log", "--log-level", "info", *extra,
                             token=metrics_reader_token(api), identity="bench").start()


def wait_health_ready(proc: ControllerProcess, timeout: float = 300) -> float:
    """Poll the health port's /readyz (caches synced, allocations rebuilt, workers started)."""
    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"controller exited:\n{proc.log_tail(40)}")  # not AssertionError: wait_for retries that
        try:
            return proc.get_health("/readyz")[0] == 200
        except OSError:
            return False

    wait_for(ready, timeout, interval=0.02, what="controller /readyz")
    return time.monotonic()


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
