"""The worker loop: take a key, sync it, retry it with backoff if the sync raised.

The sync function is called with one key and must be idempotent: it reads the object from a
lister, compares with what it wants, and writes the difference. It bounds its own time: every
API call it makes passes ``_request_timeout`` (a few seconds), so a hung API server costs one
failed sync, not a stuck worker. It reports failure by raising; it never retries or sleeps
itself, the queue does that with per-key backoff.

Work duration (get to done) is recorded by the queue itself
(``leifur_workqueue_work_duration_seconds``), so it covers every consumer, not only these loops.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import urllib3
from kubernetes.client.rest import ApiException

from leifur.kube.logfields import fields
from leifur.kube.workqueue import RateLimitingQueue

log = logging.getLogger(__name__)

# How often an idle worker looks at the stop event.
_POLL = 0.5


class Retryable(Exception):
    """A sync failed for a reason that is expected and passes (e.g. this replica is no longer the
    leader): logged in one line and retried, never with a traceback."""


def process_next(queue: RateLimitingQueue, sync: Callable[[str], None], key: str, name: str = "worker",
                 key_field: str | None = None) -> bool:
    """Sync one key handed out by `queue.get`; True on success. Always calls `queue.done(key)`.
    `key_field` names the log field (logfields.FIELDS: service, pool) the key goes into."""
    extra = fields(**{key_field: key}) if key_field else {}
    try:
        sync(key)
    except Exception as e:
        if isinstance(e, ApiException) and e.status == 409:
            # A write decided on a cache that was behind: expected, retried once the cache has caught up.
            log.info("%s: %s changed meanwhile (409 Conflict); retrying", name, key, extra=extra)
        elif isinstance(e, ApiException):
            # The API server's own words say it all (403 names the missing permission); no traceback.
            log.error("%s: sync of %s failed (retry %d): %s %s: %s", name, key, queue.num_requeues(key) + 1,
                      e.status, e.reason, _api_message(e), extra=extra)
        elif isinstance(e, Retryable):
            log.warning("%s: sync of %s failed (retry %d): %s", name, key, queue.num_requeues(key) + 1, e,
                        extra=extra)
        elif isinstance(e, urllib3.exceptions.HTTPError | OSError):
            # The API server unreachable, slow or dropping connections: expected, and retried. A
            # traceback here would read like a bug (the chaos suite found one in the log).
            log.error("%s: sync of %s failed (retry %d): the API server did not answer: %s", name, key,
                      queue.num_requeues(key) + 1, str(e).splitlines()[0][:300], extra=extra)
        else:
            # The key and the retry number make a failing object findable in the log.
            log.exception("%s: sync of %s failed (retry %d)", name, key, queue.num_requeues(key) + 1, extra=extra)
        queue.add_rate_limited(key)
        return False
    else:
        queue.forget(key)
        return True
    finally:
        queue.done(key)


def _api_message(e: ApiException) -> str:
    body = e.body or ""
    try:
        return str(json.loads(body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(body)[:500]


def run_worker(queue: RateLimitingQueue, sync: Callable[[str], None], stop: threading.Event,
               name: str = "worker", key_field: str | None = None) -> None:
    """Process keys until `stop` is set or the queue is shut down. Never raises for a failing sync."""
    while not stop.is_set():
        key = queue.get(timeout=_POLL)
        if key is None:
            if queue.shutting_down:
                return
            continue
        if stop.is_set():
            # Stopping (e.g. the lease is lost): do not write any more. Keep the key queued so
            # the queue stays truthful if someone resumes it.
            queue.add(key)
            queue.done(key)
            return
        process_next(queue, sync, key, name, key_field)


def start_workers(queue: RateLimitingQueue, sync: Callable[[str], None], count: int, stop: threading.Event,
                  name: str, key_field: str | None = None) -> list[threading.Thread]:
    """Start `count` daemon threads running `run_worker`; join them after setting `stop`."""
    threads = []
    for i in range(count):
        t = threading.Thread(target=run_worker, args=(queue, sync, stop, f"{name}-{i}", key_field), name=f"{name}-{i}",
                             daemon=True)
        t.start()
        threads.append(t)
    return threads
