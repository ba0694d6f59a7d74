"""Controller under churn (issue 16): with CHURN_BASE Services allocated, Services are created and
deleted at a steady rate; the time from each create to its IPs, and from each delete to the
Service being gone (the controller released its IPs and removed its finalizer).

LEIFUR_BENCHMARKS=1 .venv/bin/pytest tests/benchmarks/test_controller_churn.py -s

LEIFUR_CHURN_BASE (default 5,000), LEIFUR_CHURN_RATE (creates per second, and as many deletes;
default 20), LEIFUR_CHURN_SECONDS (default 60). The Services are the scale benchmark's IPv6 mix
(requested IPs, shared IPs, a named pool). Correctness is asserted: every new Service gets its
IPs, every deleted one goes, and no Service that stays changes its IPs.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_controller_scale import V4_SERVICES, bench_world, ours, service_body, service_name, wanted

from leifur.kube.client import request
from leifur.kube.informer import Informer
from leifur.model.objects import key_of
from leifur_dev import runtime
from leifur_dev.scale import (
    TARGET_LIVE_P99,
    IPWatch,
    all_ips,
    create_services,
    retrying,
    start_controller,
    wait_health_ready,
)

pytestmark = [pytest.mark.benchmark, pytest.mark.controlplane]

BASE = int(os.environ.get("LEIFUR_CHURN_BASE", "5000"))
RATE = float(os.environ.get("LEIFUR_CHURN_RATE", "20"))
SECONDS = float(os.environ.get("LEIFUR_CHURN_SECONDS", "60"))


class GoneWatch:
    """When each Service disappeared (its delete event)."""

    def __init__(self, api) -> None:
        self.gone: dict[str, float] = {}
        self.lock = threading.Lock()
        self.informer = Informer(api, "/api/v1/services", "bench-gone", 30.0)
        self.informer.add_handler(None, None, self._deleted)

    def _deleted(self, obj: dict) -> None:
        with self.lock:
            self.gone.setdefault(key_of(obj), time.monotonic())

    def start(self) -> GoneWatch:
        self.informer.start()
        assert self.informer.wait_for_sync(60)
        return self

    def stop(self) -> None:
        self.informer.stop()


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[int(q * (len(s) - 1))]


def test_create_and_delete_at_a_steady_rate(tmp_path):
    # IPv6 Services only past the IPv4 mix: address space is no limit, and deletes free nothing
    # the creates depend on.
    first = V4_SERVICES
    base = list(range(first, first + BASE))
    ops = int(RATE * SECONDS)
    with bench_world() as (cp, api):
        watch, gone = IPWatch(api, wanted).start(), GoneWatch(api).start()
        proc = start_controller(cp, api, tmp_path, "controller")
        try:
            wait_health_ready(proc)
            created, _ = create_services(api, base, service_body)
            watch.wait_all(set(created), timeout=max(600, BASE / 5), proc=proc)
            before = all_ips(api, ours)
            print(f"\nchurn at {BASE} Services: {RATE:.0f} creates and {RATE:.0f} deletes per second for "
                  f"{SECONDS:.0f} s (load average {os.getloadavg()[0]:.1f})")
            new = list(range(first + BASE, first + BASE + ops))
            victims = base[:ops]  # the oldest go first
            creates: dict[str, float] = {}
            deletes: dict[str, float] = {}
            t0 = time.monotonic()

            def op(k: int) -> None:
                time.sleep(max(0.0, t0 + k / RATE - time.monotonic()))
                body = service_body(new[k])
                ns = body["metadata"]["namespace"]
                retrying(lambda: request(api, "POST", f"/api/v1/namespaces/{ns}/services", body=body, timeout=30))
                creates[f"{ns}/{body['metadata']['name']}"] = time.monotonic()
                vns, vname = service_name(victims[k])
                retrying(lambda: request(api, "DELETE", f"/api/v1/namespaces/{vns}/services/{vname}", timeout=30))
                deletes[f"{vns}/{vname}"] = time.monotonic()

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(op, range(ops)))
            achieved = ops / (time.monotonic() - t0)
            watch.wait_all(set(creates), timeout=300, proc=proc)
            deadline = time.monotonic() + 300
            while set(deletes) - gone.gone.keys() and time.monotonic() < deadline:
                time.sleep(0.1)
            missing = set(deletes) - gone.gone.keys()
            assert not missing, f"{len(missing)} deleted Services never went, e.g. {sorted(missing)[:5]}"
            to_ip = [watch.first[k] - creates[k] for k in creates]
            to_gone = [gone.gone[k] - deletes[k] for k in deletes]
            after = all_ips(api, ours)
            stayed = set(before) - set(deletes)
            changed = sorted(k for k in stayed if after.get(k) != before[k])
            peak, _ = runtime.memory_kib(proc.proc.pid)
            print(f"  achieved {achieved:.1f} creates/s and as many deletes")
            print(f"  create -> IP: p50 {statistics.median(to_ip):.2f} s, p99 {_pct(to_ip, 0.99):.2f} s "
                  f"(target < {TARGET_LIVE_P99:.0f} s), max {max(to_ip):.2f} s")
            print(f"  delete -> gone (IPs released, finalizer removed): p50 {statistics.median(to_gone):.2f} s, "
                  f"p99 {_pct(to_gone, 0.99):.2f} s, max {max(to_gone):.2f} s")
            print(f"  Services that stayed with their IPs changed: {len(changed)} of {len(stayed)}; "
                  f"controller peak RSS {peak / 1024:.0f} MB")
            assert not changed, f"IPs changed under churn, e.g. {changed[:5]}"
        finally:
            watch.stop()
            gone.stop()
            proc.stop()
