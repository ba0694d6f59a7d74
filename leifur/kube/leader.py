"""Leader election on a coordination.k8s.io/v1 Lease, with the semantics of client-go's LeaderElector.

- A candidate takes the Lease when it is absent, released (empty holderIdentity), or expired.
  Expired is judged by OUR clock only: the time we last saw the record change, plus the
  record's leaseDurationSeconds. Clocks of different machines are never compared.
- Every write is a replace carrying the resourceVersion we read, so of two candidates racing
  for the same record one gets 409 Conflict and loses.
- The leader renews every retry_period. If no renewal succeeds for renew_deadline (counted
  from the start of the last successful renewal request), it stops being leader:
  `is_leader()` turns False by itself at that moment, even while a request is still hanging,
  and on_stopped_leading is called. renew_deadline < lease_duration is what makes this safe:
  no other candidate can take over before lease_duration has passed on its own clock after
  our last write.
- `stop(release=True)` clears the holder and sets leaseDurationSeconds=1, so another candidate
  takes over at its next retry instead of after lease_duration.

Callbacks, as in client-go: on_started_leading runs in a thread of its own (like client-go's
goroutine), so it may block, e.g. to wait for caches and then run the workers, while renewals
go on. on_stopped_leading runs on the elector's thread, when leadership is lost and also on
`stop()` if we were leading; it may run while on_started_leading is still running, and must
make that stop too. On stop it runs BEFORE the Lease is released, so our work has stopped
before another candidate can start.

After losing the lease (not after stop) `run()` returns, like client-go: the usual reaction is
to exit and let the process be restarted. Pass rejoin=True to campaign again instead.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from leifur.kube import timestamps
from leifur.kube.client import describe_error, request
from leifur.model.settings import LeaderSettings

log = logging.getLogger(__name__)


def _noop() -> None:
    pass


class LeaderElector:
    """Campaign for, hold and release one Lease, timed by `settings` (default: client-go's timing).

    Keyword-only additions: `request_timeout`, `rejoin`.
    """

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, identity: str,
                 settings: LeaderSettings | None = None,
                 on_started_leading: Callable[[], None] = _noop, on_stopped_leading: Callable[[], None] = _noop,
                 *, request_timeout: float = 5.0, rejoin: bool = False) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        self.api_client = api_client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.settings = settings or LeaderSettings()
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.request_timeout = request_timeout
        self.rejoin = rejoin
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

        self._lock = threading.Lock()
        self._leader = False
        self._last_renew = 0.0  # monotonic start of the last successful acquire/renew request
        self._observed_spec: dict | None = None
        self._observed_time = 0.0  # monotonic time _observed_spec was first seen
        self._stop = threading.Event()
        self._release_on_stop = True
        self._thread: threading.Thread | None = None

    # -- public API ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run `run()` in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("elector already started")
        self._thread = threading.Thread(target=self.run, name=f"leader-{self.name}", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Campaign and hold the lease until `stop()` (or, unless rejoin, until the lease is lost)."""
        if self._thread is None:
            self._thread = threading.current_thread()
        try:
            while not self._stop.is_set():
                if not self._acquire():
                    break
                self._renew_until_lost()
                if not self.rejoin:
                    break
        finally:
            self._exit()

    def stop(self, release: bool = True, timeout: float | None = None) -> None:
        """Stop campaigning; if leading, stop leading and (release=True) hand the lease over at once.

        The first call decides `release`; later ones (e.g. from on_stopped_leading, which the
        first call triggers) only wait. Waits for the elector thread (up to `timeout`, default a
        few request timeouts) unless called from that thread.
        """
        with self._lock:
            if not self._stop.is_set():
                self._release_on_stop = release
                self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread() and t.is_alive():
            t.join(timeout if timeout is not None else 3 * self.request_timeout + 1)

    def is_leader(self) -> bool:
        """True while we hold the lease and our last renewal is younger than renew_deadline."""
        with self._lock:
            return self._leader and time.monotonic() - self._last_renew < self.settings.renew_deadline

    def leader_identity(self) -> str | None:
        """The holder in the last Lease record we saw; None if absent or released."""
        with self._lock:
            spec = self._observed_spec or {}
        return spec.get("holderIdentity") or None

    # -- the loop ------------------------------------------------------------------------------

    def _acquire(self) -> bool:
        failing = False
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ok = self._try_acquire_or_renew(started + self.request_timeout)
                failing = False
            except Exception as e:
                ok = False
                log.log(logging.DEBUG if failing else logging.WARNING, "lease %s/%s: acquire attempt failed: %s",
                        self.namespace, self.name, describe_error(e))
                failing = True
            if ok:
                with self._lock:
                    self._leader = True
                    self._last_renew = started
                log.info("lease %s/%s: %s became leader", self.namespace, self.name, self.identity)
                # Its own thread: a callback that blocks must not hold up renewals.
                threading.Thread(target=self._callback, args=(self.on_started_leading,),
                                 name=f"leader-{self.name}-started", daemon=True).start()
                return True
            # Jitter keeps candidates that lost the same race from retrying in lockstep.
            self._stop.wait(self.settings.retry_period * random.uniform(1.0, 1.2))
        return False

    def _renew_until_lost(self) -> None:
        while not self._stop.wait(self.settings.retry_period):
            started = time.monotonic()
            with self._lock:
                deadline = self._last_renew + self.settings.renew_deadline
            if started >= deadline:
                self._lose("renew deadline passed")
                return
            try:
                ok = self._try_acquire_or_renew(min(deadline, started + self.request_timeout))
            except Exception as e:
                log.warning("lease %s/%s: renew failed: %s", self.namespace, self.name, describe_error(e))
                if time.monotonic() >= deadline:
                    self._lose(f"no renewal for {self.settings.renew_deadline}s")
                    return
                continue
            if not ok:
                self._lose(f"lease taken by {self.leader_identity()}")
                return
            with self._lock:
                self._last_renew = started

    def _lose(self, why: str) -> None:
        with self._lock:
            was = self._leader
            self._leader = False
        if was:
            log.warning("lease %s/%s: %s stopped leading: %s", self.namespace, self.name, self.identity, why)
            self._callback(self.on_stopped_leading)

    def _exit(self) -> None:
        with self._lock:
            was = self._leader
        if not was:
            return
        self._lose("stopping")
        if self._release_on_stop:
            try:
                self._release()
            except Exception as e:
                log.warning("lease %s/%s: release failed (others take over after %.0fs): %s",
                            self.namespace, self.name, self.settings.lease_duration, describe_error(e))

    # -- the Lease -----------------------------------------------------------------------------

    def _timeout(self, deadline: float) -> float:
        return min(max(deadline - time.monotonic(), 0.1), self.request_timeout)

    def _observe(self, spec: dict) -> None:
        with self._lock:
            if spec != self._observed_spec:
                self._observed_spec = spec
                self._observed_time = time.monotonic()

    def _try_acquire_or_renew(self, deadline: float) -> bool:
        """One round: read the Lease and write ourselves as holder if we may. False if someone else holds it."""
        now = timestamps.now_micro()
        duration = max(1, round(self.settings.lease_duration))
        try:
            lease: dict[str, Any] | None = request(self.api_client, "GET", self._path, timeout=self._timeout(deadline))
        except ApiException as e:
            if e.status != 404:
                raise
            lease = None
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": duration,
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
            }
            # 409 AlreadyExists: another candidate created it first; raised, so this round fails.
            created = request(self.api_client, "POST", self._collection, body=body, timeout=self._timeout(deadline))
            self._observe(created.get("spec") or {})
            return True

        spec = lease.get("spec") or {}
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            with self._lock:
                expires = self._observed_time + (spec.get("leaseDurationSeconds") or self.settings.lease_duration)
            if time.monotonic() < expires:
                return False
        ours = holder == self.identity
        lease["spec"] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": duration,
            "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": (spec.get("leaseTransitions") or 0) + (0 if ours else 1),
        }
        # The resourceVersion we read stays in metadata: a concurrent writer makes this 409.
        updated = request(self.api_client, "PUT", self._path, body=lease, timeout=self._timeout(deadline))
        self._observe(updated.get("spec") or {})
        return True

    def _release(self) -> None:
        deadline = time.monotonic() + self.request_timeout
        lease = request(self.api_client, "GET", self._path, timeout=self._timeout(deadline))
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return  # someone else holds it already; nothing of ours to release
        now = timestamps.now_micro()
        lease["spec"] = {
            "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
            "leaseTransitions": spec.get("leaseTransitions") or 0,
        }
        updated = request(self.api_client, "PUT", self._path, body=lease, timeout=self._timeout(deadline))
        self._observe(updated.get("spec") or {})
        log.info("lease %s/%s: released by %s", self.namespace, self.name, self.identity)

    def _callback(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("lease %s/%s: leader election callback %r failed", self.namespace, self.name, fn)
