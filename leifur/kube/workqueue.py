"""A rate-limiting work queue with client-go semantics.

A key is in at most one of three places: waiting (ready to be handed out), processing (handed
out by `get`, not yet `done`), or both "processing and dirty" (added again while processing;
it goes back to waiting when `done` is called). So one key is never processed by two workers
at once, and a change that arrives during a sync is never lost.

Delayed keys (`add_after`, `add_rate_limited`) sit in a heap; no extra thread services it:
every `get` first promotes the keys that are due and otherwise sleeps no longer than until the
next one is.

Differs from client-go in one point: after `shut_down` `get` returns None at once even if keys
are still waiting, instead of draining them. A controller shuts its queue down when it stops
or loses the lease, and then it must stop writing; the keys are derived from the cluster and
the next run (or leader) enqueues them all again.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque

from leifur.kube import backoff, metrics


class RateLimitingQueue:
    """Deduplicating FIFO of string keys with delayed adds and per-key exponential backoff."""

    def __init__(self, name: str, base_delay: float = 0.05, max_delay: float = 60.0) -> None:
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._added_at: dict[str, float] = {}  # key -> monotonic time it became dirty (queue latency)
        self._started_at: dict[str, float] = {}  # key -> monotonic time get handed it out (work duration)
        self._delayed: list[tuple[float, int, str]] = []  # heap of (ready_at, seq, key)
        self._delayed_at: dict[str, float] = {}  # key -> its earliest pending ready_at; other heap entries are stale
        self._seq = itertools.count()
        self._failures: dict[str, int] = {}
        self._shutting_down = False
        self._depth = metrics.WORKQUEUE_DEPTH.labels(name=name)
        self._adds = metrics.WORKQUEUE_ADDS.labels(name=name)
        self._retries = metrics.WORKQUEUE_RETRIES.labels(name=name)
        self._queue_duration = metrics.WORKQUEUE_QUEUE_DURATION.labels(name=name)
        self._work_duration = metrics.WORKQUEUE_WORK_DURATION.labels(name=name)
        self._depth.set(0)

    # -- the plain queue -------------------------------------------------------------------

    def add(self, key: str) -> None:
        """Queue `key` unless it is already waiting; if it is being processed, queue it after `done`."""
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: str) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        self._added_at[key] = time.monotonic()
        self._adds.inc()
        if key in self._processing:
            return
        self._queue.append(key)
        self._depth.set(len(self._queue))
        self._cond.notify()

    def get(self, timeout: float | None = None) -> str | None:
        """Block until a key is ready and hand it out; None on timeout or once shut down.

        The caller owns the key until it calls `done(key)`, which it must always do.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutting_down:
                    return None
                now = time.monotonic()
                self._promote_due_locked(now)
                if self._queue:
                    key = self._queue.popleft()
                    self._depth.set(len(self._queue))
                    self._processing.add(key)
                    self._dirty.discard(key)
                    added = self._added_at.pop(key, None)
                    if added is not None:
                        self._queue_duration.observe(now - added)
                    self._started_at[key] = now
                    return key
                wait = None if deadline is None else deadline - now
                if wait is not None and wait <= 0:
                    return None
                if self._delayed:
                    until_due = max(self._delayed[0][0] - now, 0.0)
                    wait = until_due if wait is None else min(wait, until_due)
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        """Mark `key` processed; if it was added meanwhile, it is queued again now."""
        with self._cond:
            self._processing.discard(key)
            started = self._started_at.pop(key, None)
            if started is not None:
                self._work_duration.observe(time.monotonic() - started)
            if key in self._dirty and not self._shutting_down:
                self._queue.append(key)
                self._depth.set(len(self._queue))
                self._cond.notify()

    def shut_down(self) -> None:
        """Stop handing out keys: every `get`, waiting or future, returns None; adds are ignored."""
        with self._cond:
            self._shutting_down = True
            self._queue.clear()
            self._dirty.clear()
            self._added_at.clear()
            self._delayed.clear()
            self._delayed_at.clear()
            self._depth.set(0)
            self._cond.notify_all()

    @property
    def shutting_down(self) -> bool:
        """True once `shut_down` was called."""
        with self._cond:
            return self._shutting_down

    def __len__(self) -> int:
        """Keys ready to be handed out (not the delayed ones, not the ones being processed)."""
        with self._cond:
            self._promote_due_locked(time.monotonic())
            return len(self._queue)

    # -- delays ------------------------------------------------------------------------------

    def add_after(self, key: str, delay: float) -> None:
        """Queue `key` once `delay` seconds have passed; of several pending delays the earliest wins."""
        with self._cond:
            if self._shutting_down:
                return
            if delay <= 0:
                self._add_locked(key)
                return
            ready_at = time.monotonic() + delay
            current = self._delayed_at.get(key)
            if current is not None and current <= ready_at:
                return
            self._delayed_at[key] = ready_at
            heapq.heappush(self._delayed, (ready_at, next(self._seq), key))
            # A getter may be sleeping until a later deadline; let it recompute.
            self._cond.notify_all()

    def _promote_due_locked(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            ready_at, _, key = heapq.heappop(self._delayed)
            if self._delayed_at.get(key) != ready_at:
                continue  # superseded by an earlier add_after of the same key
            del self._delayed_at[key]
            self._add_locked(key)

    # -- rate limiting -----------------------------------------------------------------------

    def when(self, key: str) -> float:
        """The backoff the next `add_rate_limited(key)` would use, without counting a failure."""
        with self._cond:
            return self._backoff_locked(self._failures.get(key, 0))

    def _backoff_locked(self, failures: int) -> float:
        return backoff.delay(failures, self.base_delay, self.max_delay)

    def add_rate_limited(self, key: str) -> None:
        """Re-queue `key` after its backoff (base * 2**failures, capped at max) and count a failure."""
        with self._cond:
            if self._shutting_down:
                return
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
            delay = self._backoff_locked(failures)
            self._retries.inc()
        self.add_after(key, delay)

    def forget(self, key: str) -> None:
        """Reset the failure count of `key` (call after a successful sync)."""
        with self._cond:
            self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        """Failures counted for `key` since the last `forget`."""
        with self._cond:
            return self._failures.get(key, 0)
