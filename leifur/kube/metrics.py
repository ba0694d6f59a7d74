"""Prometheus metrics of the controller machinery (work queues, informers, leader election, events).

All metrics live in the default registry. Creation goes through `_metric`, which returns the
collector already registered under that name, so importing this module twice (reload, or
two import paths in tests) never raises "Duplicated timeseries".
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

_M = TypeVar("_M", Counter, Gauge, Histogram)

# Work is mostly sub-second API round-trips; the tail covers backoff waits of up to a minute.
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def family(version: int) -> str:
    """The `family` label's value for IP version 4 or 6: "ipv4", "ipv6", the same in every program
    (so that queries join the controller's and the agents' series without relabelling)."""
    return f"ipv{version}"


def _metric(cls: type[_M], name: str, documentation: str, labelnames: tuple[str, ...], **kwargs: Any) -> _M:
    # _names_to_collectors is the registry's own index; it holds every exposed name
    # (for a counter both "x" and "x_total"), so a lookup by the full name is enough.
    existing = REGISTRY._names_to_collectors.get(name)
    if existing is not None:
        if not isinstance(existing, cls):
            raise TypeError(f"metric {name} is already registered as {type(existing).__name__}")
        return existing
    return cls(name, documentation, labelnames, **kwargs)


BUILD_INFO = _metric(Gauge, "leifur_build_info", "Always 1: the version and revision of the running program.",
                     ("program", "version", "revision"))
WORKQUEUE_DEPTH = _metric(Gauge, "leifur_workqueue_depth", "Keys waiting in the work queue (ready, not delayed).",
                          ("name",))
WORKQUEUE_ADDS = _metric(Counter, "leifur_workqueue_adds_total", "Keys added to the work queue (after dedup).",
                         ("name",))
WORKQUEUE_RETRIES = _metric(Counter, "leifur_workqueue_retries_total", "Rate-limited re-adds (failed syncs).",
                            ("name",))
WORKQUEUE_QUEUE_DURATION = _metric(
    Histogram, "leifur_workqueue_queue_duration_seconds", "Time a key waits in the queue between add and get.",
    ("name",), buckets=_DURATION_BUCKETS)
WORKQUEUE_WORK_DURATION = _metric(
    Histogram, "leifur_workqueue_work_duration_seconds", "Time from get to done of a key (one sync).",
    ("name",), buckets=_DURATION_BUCKETS)

INFORMER_RELISTS = _metric(Counter, "leifur_informer_relists_total",
                           "Full LISTs started after the initial sync (the watch's resourceVersion expired).",
                           ("resource",))
INFORMER_WATCH_ERRORS = _metric(Counter, "leifur_informer_watch_errors_total",
                                "Failed LIST/WATCH requests, broken streams and ERROR watch events.",
                                ("resource",))

EVENTS_DROPPED = _metric(Counter, "leifur_events_dropped_total",
                         "Events not written: queue full, or the API server refused them.", ("component",))
