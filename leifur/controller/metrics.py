"""The controller's Prometheus metrics (names start with leifur_)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from leifur.kube.metrics import family

RECONCILE_DURATION = Histogram(
    "leifur_reconcile_duration_seconds", "Time one sync of one object took.", ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ALLOCATIONS = Counter("leifur_allocations_total", "Services whose assigned IPs changed to a new, non-empty set.")
ALLOCATION_FAILURES = Counter(
    "leifur_allocation_failures_total", "Syncs that could not give a Service what it asks for.", ["reason"]
)
POOL_USABLE = Gauge("leifur_pool_addresses_usable", "Usable addresses in a pool.", ["pool", "family"])
POOL_IN_USE = Gauge("leifur_pool_addresses_in_use", "Addresses of a pool held by Services.", ["pool", "family"])
IS_LEADER = Gauge("leifur_controller_is_leader", "1 while this replica holds the leader Lease.")


def set_pool_usage(pool: str, version: int, total: int, in_use: int) -> None:
    POOL_USABLE.labels(pool, family(version)).set(total)
    POOL_IN_USE.labels(pool, family(version)).set(in_use)


def forget_pool(pool: str) -> None:
    for gauge in (POOL_USABLE, POOL_IN_USE):
        for version in (4, 6):
            with contextlib.suppress(KeyError):
                gauge.remove(pool, family(version))
