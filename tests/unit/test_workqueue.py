"""The work queue keeps client-go's promises: dedup, one worker per key, backoff, prompt shutdown."""

from __future__ import annotations

import importlib
import itertools
import threading
import time
from collections import Counter

import pytest
from prometheus_client import REGISTRY

from leifur.kube import metrics
from leifur.kube.worker import run_worker, start_workers
from leifur.kube.workqueue import RateLimitingQueue


def test_a_waiting_key_is_queued_once():
    q = RateLimitingQueue("t-dedup")
    for key in ("a", "b", "a", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3
    assert [q.get(timeout=0), q.get(timeout=0), q.get(timeout=0)] == ["a", "b", "c"]
    assert q.get(timeout=0) is None


def test_a_key_added_while_processing_comes_back_only_after_done():
    q = RateLimitingQueue("t-reprocess")
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0
    assert q.get(timeout=0.01) is None  # not handed to a second worker while the first has it
    q.done("a")
    assert len(q) == 1
    assert q.get(timeout=0) == "a"
    q.done("a")
    assert q.get(timeout=0) is None  # the two adds during processing collapsed into one


def test_done_without_readd_does_not_requeue():
    q = RateLimitingQueue("t-done")
    q.add("a")
    q.done(q.get(timeout=0))
    assert len(q) == 0


def test_rate_limiting_grows_exponentially_capped_and_forget_resets():
    q = RateLimitingQueue("t-backoff", base_delay=0.01, max_delay=0.05)
    assert [q.when("k")] == [0.01]
    delays = []
    for _ in range(5):
        delays.append(q.when("k"))
        q.add_rate_limited("k")
    assert delays == [0.01, 0.02, 0.04, 0.05, 0.05]
    assert q.num_requeues("k") == 5
    q.forget("k")
    assert q.num_requeues("k") == 0
    assert q.when("k") == 0.01
    assert q.get(timeout=1) == "k"  # delivered once, although rate-limited five times


def test_rate_limited_key_is_delivered_after_its_delay():
    q = RateLimitingQueue("t-delay", base_delay=0.05)
    q.add_rate_limited("k")
    q.add_rate_limited("k")  # second failure: 0.1 s, but the pending 0.05 s wins
    assert len(q) == 0
    start = time.monotonic()
    assert q.get(timeout=1) == "k"
    assert 0.04 <= time.monotonic() - start < 0.5


def test_huge_failure_counts_do_not_overflow():
    q = RateLimitingQueue("t-overflow", base_delay=0.05, max_delay=60)
    q._failures["k"] = 5000
    assert q.when("k") == 60


def test_add_after_orders_by_due_time_and_earliest_wins():
    q = RateLimitingQueue("t-after")
    q.add_after("late", 0.09)
    q.add_after("early", 0.03)
    q.add_after("mid", 0.06)
    q.add_after("late", 0.2)  # a later duplicate does not postpone
    q.add_after("now", 0)  # zero delay is a plain add
    assert q.get(timeout=0) == "now"
    got = [q.get(timeout=1) for _ in range(3)]
    assert got == ["early", "mid", "late"]
    assert q.get(timeout=0.15) is None  # and "late" came only once


def test_add_after_wakes_a_getter_sleeping_for_a_later_key():
    q = RateLimitingQueue("t-after-wake")
    q.add_after("slow", 5)
    result = []
    t = threading.Thread(target=lambda: result.append(q.get(timeout=2)))
    t.start()
    time.sleep(0.02)
    q.add_after("fast", 0.02)
    t.join(2)
    assert result == ["fast"]


def test_shut_down_wakes_every_getter_and_ignores_adds():
    q = RateLimitingQueue("t-shutdown")
    results: list = []
    getters = [threading.Thread(target=lambda: results.append(q.get())) for _ in range(4)]
    for t in getters:
        t.start()
    time.sleep(0.02)
    q.shut_down()
    for t in getters:
        t.join(2)
        assert not t.is_alive()
    assert results == [None] * 4
    assert q.shutting_down
    q.add("a")
    q.add_after("b", 0)
    q.add_rate_limited("c")
    assert len(q) == 0
    assert q.get(timeout=0) is None


def test_concurrent_producers_and_consumers_never_share_a_key():
    q = RateLimitingQueue("t-concurrent")
    keys = [f"k{i}" for i in range(20)]
    active: set[str] = set()
    lock = threading.Lock()
    overlaps: list[str] = []
    processed: Counter = Counter()
    stop = threading.Event()

    def produce(offset: int) -> None:
        for i in range(2000):
            q.add(keys[(i + offset) % len(keys)])

    def consume() -> None:
        while True:
            key = q.get(timeout=0.05)
            if key is None:
                if stop.is_set():
                    return
                continue
            with lock:
                if key in active:
                    overlaps.append(key)
                active.add(key)
            time.sleep(0)  # let another thread run while we "process"
            with lock:
                active.discard(key)
                processed[key] += 1
            q.done(key)

    consumers = [threading.Thread(target=consume) for _ in range(6)]
    producers = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join()
    stop.set()
    for t in consumers:
        t.join(10)
    assert not overlaps
    assert set(processed) == set(keys)  # every key added was processed at least once after its last add
    assert len(q) == 0


def test_metrics_count_adds_retries_and_depth():
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"name": "t-metrics"}) or 0.0

    q = RateLimitingQueue("t-metrics", base_delay=0.001)
    q.add("a")
    q.add("a")
    q.add("b")
    assert sample("leifur_workqueue_adds_total") == 2
    assert sample("leifur_workqueue_depth") == 2
    key = q.get(timeout=0)
    q.add_rate_limited(key)
    q.done(key)
    assert sample("leifur_workqueue_retries_total") == 1
    assert sample("leifur_workqueue_queue_duration_seconds_count") == 1
    assert sample("leifur_workqueue_work_duration_seconds_count") == 1


def test_metrics_module_can_be_imported_again():
    again = importlib.reload(metrics)
    assert again.WORKQUEUE_DEPTH is REGISTRY._names_to_collectors["leifur_workqueue_depth"]


# -- the worker loop ------------------------------------------------------------------------------


def test_failing_sync_is_retried_with_backoff_and_forgotten_after_success():
    q = RateLimitingQueue("t-worker-retry", base_delay=0.01, max_delay=0.1)
    calls: list[tuple[str, float]] = []
    requeues: list[int] = []
    succeeded = threading.Event()

    def sync(key: str) -> None:
        calls.append((key, time.monotonic()))
        requeues.append(q.num_requeues(key))
        if len(calls) <= 3:
            raise RuntimeError("API said no")
        succeeded.set()

    stop = threading.Event()
    t = threading.Thread(target=run_worker, args=(q, sync, stop, "t"))
    t.start()
    q.add("ns/svc")
    assert succeeded.wait(5)
    q.shut_down()  # prompt; test_workers_stop_when_told covers the stop event
    t.join(5)
    assert not t.is_alive()
    assert [k for k, _ in calls] == ["ns/svc"] * 4
    assert requeues == [0, 1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(calls)]
    # Backoff 0.01, 0.02, 0.04: each retry waits at least its delay, and the waits grow.
    assert gaps[0] >= 0.009 and gaps[1] >= 0.019 and gaps[2] >= 0.039
    assert q.num_requeues("ns/svc") == 0  # forgotten after the success


def test_a_raising_sync_does_not_kill_the_worker(caplog):
    q = RateLimitingQueue("t-worker-survives", base_delay=0.5)
    seen: list[str] = []
    good = threading.Event()

    def sync(key: str) -> None:
        seen.append(key)
        if key == "bad":
            raise ValueError("bad input")
        good.set()

    stop = threading.Event()
    threads = start_workers(q, sync, 1, stop, "t-survives")
    q.add("bad")
    q.add("good")
    assert good.wait(5)
    assert threads[0].is_alive()
    assert seen[:2] == ["bad", "good"]
    assert q.num_requeues("bad") == 1
    assert any("bad" in r.getMessage() and r.exc_info for r in caplog.records)
    q.shut_down()  # the worker returns at once, without waiting for the 0.5 s retry
    for t in threads:
        t.join(2)
        assert not t.is_alive()


def test_workers_stop_when_told():
    q = RateLimitingQueue("t-worker-stop")
    stop = threading.Event()
    threads = start_workers(q, lambda key: None, 3, stop, "t-stop")
    assert [t.name for t in threads] == ["t-stop-0", "t-stop-1", "t-stop-2"]
    stop.set()
    for t in threads:
        t.join(2)
        assert not t.is_alive()


@pytest.mark.parametrize("count", [1, 4])
def test_many_workers_process_each_key_once_per_add(count):
    q = RateLimitingQueue(f"t-workers-{count}")
    done: Counter = Counter()
    lock = threading.Lock()
    all_done = threading.Event()

    def sync(key: str) -> None:
        with lock:
            done[key] += 1
            if sum(done.values()) == 50:
                all_done.set()

    stop = threading.Event()
    threads = start_workers(q, sync, count, stop, f"t-many-{count}")
    for i in range(50):
        q.add(f"k{i}")
    assert all_done.wait(5)
    q.shut_down()
    for t in threads:
        t.join(2)
        assert not t.is_alive()
    assert done == Counter({f"k{i}": 1 for i in range(50)})
