"""Kubernetes Events (core/v1) about our objects, written in the background.

`event()` never blocks and never raises for API trouble: it puts the event on a bounded
in-memory queue that one thread drains; when the queue is full an event is dropped (an Event
is a hint to a human, never worth stalling a reconcile), a Normal one before any Warning, and
the drops are logged at most once per DROP_LOG_INTERVAL. Drops and API errors are counted in
`leifur_events_dropped_total`.

Repeats are aggregated like client-go's event correlator does for identical events: the same
(object uid, reason, message) within 10 minutes of the last occurrence patches count and
lastTimestamp of the existing Event instead of creating a new one.

Events of cluster-scoped objects go to the "default" namespace, where kubectl looks for them.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from leifur.kube import metrics, timestamps
from leifur.kube.client import describe_error, request

log = logging.getLogger(__name__)

AGGREGATION_WINDOW = 600.0  # seconds a repeat still counts into the same Event
_CACHE_SIZE = 4096  # events remembered for aggregation; the oldest go first
_TYPES = ("Normal", "Warning")
DROP_LOG_INTERVAL = 10.0  # seconds: a burst that overflows the queue logs one line, not thousands


@dataclass
class _Seen:
    namespace: str
    name: str
    count: int
    last: float  # monotonic time of the last occurrence


class EventRecorder:
    """Records Events for `component`; `host` becomes source.host (default: this machine's hostname).

    Keyword-only additions: `queue_size` (pending events kept before dropping) and `request_timeout`.
    """

    def __init__(self, api_client: client.ApiClient, component: str, host: str | None = None, *,
                 queue_size: int = 1000, request_timeout: float = 5.0) -> None:
        self.api_client = api_client
        self.component = component
        self.host = host or socket.gethostname()
        self.queue_size = queue_size
        self.request_timeout = request_timeout
        self._cond = threading.Condition()
        # (object reference, type, reason, message, timestamp of the call)
        self._pending: collections.deque[tuple[dict, str, str, str, str]] = collections.deque()
        self._busy = False  # the thread is writing an event it already took off the queue
        self._stopped = False
        self._seen: collections.OrderedDict[tuple[str, ...], _Seen] = collections.OrderedDict()
        self._dropped = metrics.EVENTS_DROPPED.labels(component=component)
        self._unlogged_drops = 0
        self._last_drop_log = float("-inf")
        self._thread = threading.Thread(target=self._run, name=f"events-{component}", daemon=True)
        self._thread.start()

    def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        """Queue an Event about `obj` (an API object dict with apiVersion, kind and metadata).

        Raises ValueError only for a `type_` other than "Normal" or "Warning" (a programming error).
        """
        if type_ not in _TYPES:
            raise ValueError(f"event type must be one of {_TYPES}, not {type_!r}")
        # Copy the reference now: the caller may change or reuse its dict after we return.
        obj = obj if isinstance(obj, dict) else {}
        meta = obj.get("metadata") or {}
        ref = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
               "namespace": meta.get("namespace"), "uid": meta.get("uid"),
               "resourceVersion": meta.get("resourceVersion")}
        if not ref.get("kind") or not ref.get("name"):
            self._dropped.inc()
            log.warning("dropping %s event %s: the object has no kind or metadata.name", type_, reason)
            return
        with self._cond:
            if self._stopped:
                return
            item = (ref, type_, reason, message, timestamps.now())
            if len(self._pending) >= self.queue_size:
                normal = next((i for i, p in enumerate(self._pending) if p[1] == "Normal"), None)
                if type_ == "Warning" and normal is not None:
                    # The oldest Normal one makes room: a warning is what an operator looks for.
                    evicted = self._pending[normal]
                    del self._pending[normal]
                    self._pending.append(item)
                    item = evicted
                self._drop(item)
                return
            self._pending.append(item)
            self._cond.notify_all()

    def _drop(self, item: tuple[dict, str, str, str, str]) -> None:
        """Count a dropped event; log the drops at most once per DROP_LOG_INTERVAL."""
        self._dropped.inc()
        self._unlogged_drops += 1
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            ref, type_, reason, message, _when = item
            log.warning("event queue full (%d pending): dropped %d events since the last such line (all are "
                        "counted in leifur_events_dropped_total), the latest %s %s on %s: %s", self.queue_size,
                        self._unlogged_drops, type_, reason, _describe(ref), message)
            self._unlogged_drops = 0
            self._last_drop_log = now

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event has been written (or given up on); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most `timeout` seconds), then end the thread; later events are ignored."""
        self.flush(timeout)
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopped)
                if self._stopped:
                    return
                item = self._pending.popleft()
                self._busy = True
            try:
                self._write(*item)
            except Exception as e:
                self._dropped.inc()
                log.warning("could not record event %s on %s: %s", item[2], _describe(item[0]), describe_error(e))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, ref: dict, type_: str, reason: str, message: str, timestamp: str) -> None:
        name, obj_ns = ref["name"], ref["namespace"]
        namespace = obj_ns or "default"
        identity = ref["uid"] or f"{ref['kind']}/{obj_ns}/{name}"
        key = (identity, reason, message)
        now = time.monotonic()

        seen = self._seen.get(key)
        if seen is not None and now - seen.last <= AGGREGATION_WINDOW:
            try:
                request(self.api_client, "PATCH", f"/api/v1/namespaces/{seen.namespace}/events/{seen.name}",
                        body={"count": seen.count + 1, "lastTimestamp": timestamp},
                        content_type="application/merge-patch+json", timeout=self.request_timeout)
                seen.count += 1
                seen.last = now
                self._seen.move_to_end(key)
                return
            except ApiException as e:
                if e.status != 404:
                    raise
                # The Event expired (the API server's event TTL) or was deleted: start a new one.
            del self._seen[key]

        body = {
            "apiVersion": "v1", "kind": "Event",
            # client-go's naming: the object's name and a nanosecond timestamp in hex.
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {k: v for k, v in ref.items() if v},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": timestamp, "lastTimestamp": timestamp, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.host,
        }
        created = request(self.api_client, "POST", f"/api/v1/namespaces/{namespace}/events", body=body,
                          timeout=self.request_timeout)
        self._seen[key] = _Seen(namespace, created["metadata"]["name"], 1, now)
        while len(self._seen) > _CACHE_SIZE:
            self._seen.popitem(last=False)


def _describe(ref: dict) -> str:
    ns = ref.get("namespace")
    return f"{ref.get('kind')} {ns + '/' if ns else ''}{ref.get('name')}"
