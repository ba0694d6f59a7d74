"""A small reflector: LIST, then WATCH from the list's resourceVersion, into a store of plain dicts.

Objects are kept as the API server returns them (JSON, camelCase keys), keyed "namespace/name"
or "name" for cluster-scoped kinds, less `metadata.managedFields` and with their keys and short
strings shared (leifur.kube.kept says why). Items of a LIST response carry no apiVersion/kind;
the informer fills them in from the list, so every stored object has both.

Connection handling, the part the official client gets wrong for us:
- a failed LIST or WATCH, or a stream that breaks, is retried with exponential backoff with
  jitter (0.2 s doubling to 5 s); the backoff is reset only by a healthy watch (one that
  delivered an event or stayed open for a second), so an API server that is down or that
  closes every stream at once is never hammered;
- a watch that ends normally (server-side timeoutSeconds) is re-opened from the last
  resourceVersion seen, bookmarks included;
- "410 Gone" (as an HTTP status or an ERROR event) means our resourceVersion is too old to
  resume from: we LIST again and diff the result against the store, so deletions that
  happened while we were disconnected still reach on_delete (with the last state we knew).

Handlers run on the informer's thread, after the store has been updated (a lister read from a
handler, or from a worker woken by it, sees the new state). They must be cheap: they enqueue
keys. An exception in a handler is logged and does not stop the informer.

Listers (`get`, `objects`) return deep copies: a caller may change what it gets (e.g. add a
finalizer before a PUT) without corrupting the cache. Handlers receive the stored objects
themselves, uncopied, to keep dispatch cheap: they must not mutate them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from leifur.kube import metrics
from leifur.kube.backoff import Backoff
from leifur.kube.client import PAGE_SIZE, describe_error, request, send
from leifur.kube.kept import kept
from leifur.model.objects import key_of

log = logging.getLogger(__name__)

# A watch that delivered an event or lasted this long proves the connection works: backoff resets.
_HEALTHY_AFTER = 1.0
# While the API server stays unreachable, repeat the warning this often (seconds).
_WARN_EVERY = 60.0


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): only a new LIST can continue."""


class WatchError(Exception):
    """The API server ended a watch with an ERROR event other than 410."""


@dataclass
class _Handler:
    on_add: Callable[[dict], None] | None
    on_update: Callable[[dict, dict], None] | None
    on_delete: Callable[[dict], None] | None


def _rv(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


class Informer:
    """Keeps a local copy of one collection (`path`, e.g. "/api/v1/services") up to date and calls handlers.

    `resource` names it in logs and metrics. `request_timeout` bounds each LIST request and the
    connect of each WATCH. Keyword-only additions: `watch_timeout` (server-side timeoutSeconds of
    a watch, randomised up to +20%), `label_selector`, `field_selector`, `page_size` (LIST limit;
    0 disables paging), `keep` (the part of each object the cache holds, for a reader that needs
    little of a large kind; it must keep metadata's name, namespace and resourceVersion).
    """

    def __init__(self, api_client: client.ApiClient, path: str, resource: str, request_timeout: float = 10.0, *,
                 watch_timeout: float = 300.0, label_selector: str | None = None, field_selector: str | None = None,
                 page_size: int = PAGE_SIZE, keep: Callable[[dict], dict] | None = None) -> None:
        self.api_client = api_client
        self._keep = keep or (lambda obj: obj)
        self.path = path
        self.resource = resource
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self._selectors: list[tuple[str, str]] = []
        if label_selector:
            self._selectors.append(("labelSelector", label_selector))
        if field_selector:
            self._selectors.append(("fieldSelector", field_selector))

        # Counters for tests and debugging; only the informer thread writes them.
        self.connect_attempts = 0  # LIST and WATCH requests sent
        self.list_count = 0  # completed LISTs, the initial one included
        self.watch_count = 0  # watch streams opened (HTTP 200)

        self._store: dict[str, dict] = {}
        self._store_lock = threading.Lock()
        # Held while the store changes and its handlers run, so add_handler's replay of the
        # store never interleaves with a live event.
        self._dispatch_lock = threading.RLock()
        self._handlers: list[_Handler] = []
        self._rv: str | None = None
        self._need_list = True
        self._healthy = False
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._resp: Any = None  # the open watch stream (urllib3 response), so stop() can break it
        self._resp_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._relists = metrics.INFORMER_RELISTS.labels(resource=resource)
        self._watch_errors = metrics.INFORMER_WATCH_ERRORS.labels(resource=resource)

    # -- public API ----------------------------------------------------------------------------

    def add_handler(self, on_add: Callable[[dict], None] | None = None,
                    on_update: Callable[[dict, dict], None] | None = None,
                    on_delete: Callable[[dict], None] | None = None) -> None:
        """Register handlers; objects already in the store are replayed to `on_add` at once."""
        handler = _Handler(on_add, on_update, on_delete)
        with self._dispatch_lock:
            self._handlers.append(handler)
            with self._store_lock:
                existing = list(self._store.values())
            for obj in existing:
                self._call(handler.on_add, obj)

    def start(self) -> None:
        """Run the list/watch loop in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError(f"informer {self.resource} already started")
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.resource}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and break the open watch stream; returns once the thread has ended (or timeout)."""
        self._stop.set()
        self._unpaused.set()
        self._break_stream()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def has_synced(self) -> bool:
        """True once the first LIST has filled the store."""
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float) -> bool:
        """Block until `has_synced()` or `timeout` seconds; returns `has_synced()`."""
        return self._synced.wait(timeout)

    def get(self, key: str) -> dict | None:
        """A deep copy of the object stored under `key`, or None."""
        with self._store_lock:
            obj = self._store.get(key)
        return copy.deepcopy(obj) if obj is not None else None

    # Not `list`: a method of that name would shadow the builtin in this class's annotations.
    def objects(self) -> list[dict]:
        """Deep copies of all stored objects."""
        with self._store_lock:
            objs = list(self._store.values())
        return copy.deepcopy(objs)

    def shared(self) -> list[dict]:
        """The stored objects themselves, for readers that never change them. The store replaces
        an object on every change and never edits one, so the list stays as it was when taken.
        Copying 5,000 Services and their EndpointSlices took most of an agent's sync."""
        with self._store_lock:
            return list(self._store.values())

    def keys(self) -> list[str]:
        """The keys of all stored objects."""
        with self._store_lock:
            return list(self._store)

    @property
    def resource_version(self) -> str | None:
        """The last resourceVersion seen (LIST, event or bookmark); the next watch starts there."""
        with self._store_lock:
            return self._rv

    # -- test hooks ----------------------------------------------------------------------------

    def pause(self) -> None:
        """Test hook: break the watch and stay disconnected until `resume`."""
        self._unpaused.clear()
        self._break_stream()

    def resume(self, resource_version: str | None = None) -> None:
        """Test hook: reconnect; with `resource_version`, watch from there.

        An old resourceVersion does not reliably provoke 410 Gone: kube-apiserver 1.34 replays its
        watch cache for "1". Restarting the API server while paused does (its cache starts anew).
        """
        if resource_version is not None:
            with self._store_lock:
                self._rv = resource_version
        self._unpaused.set()

    def force_reconnect(self, resource_version: str | None = None) -> None:
        """Test hook: break the current watch; it resumes from `resource_version` if given, else the last one."""
        if resource_version is not None:
            with self._store_lock:
                self._rv = resource_version
        self._break_stream()

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(0.2, 5.0, jitter=0.2)
        failing = False
        last_warning = 0.0
        while not self._stop.is_set():
            if not self._unpaused.is_set():
                self._unpaused.wait()
                continue
            self._healthy = False
            try:
                if self._need_list:
                    self._list_and_replace()
                self._watch()
            except _Expired as e:
                self._watch_errors.inc()
                log.info("%s: watch from resourceVersion %s expired (%s); listing again",
                         self.resource, self.resource_version, e)
                self._need_list = True
            except Exception as e:
                if self._stop.is_set() or not self._unpaused.is_set():
                    continue  # we broke the stream ourselves
                self._watch_errors.inc()
                # A warning when an outage starts and once a minute while it lasts, not one per retry.
                now = time.monotonic()
                level = logging.DEBUG
                if not failing or now - last_warning >= _WARN_EVERY:
                    level, last_warning = logging.WARNING, now
                log.log(level, "%s: list/watch failed, retrying with backoff: %s", self.resource, describe_error(e))
                failing = True
            if self._healthy:
                if failing:
                    log.info("%s: watch re-established", self.resource)
                failing = False
                backoff.reset()
                continue
            self._stop.wait(backoff.next())

    def _list_and_replace(self) -> None:
        items: dict[str, dict] = {}
        cont: str | None = None
        limit = self.page_size or None
        if self.list_count:
            self._relists.inc()
        while True:
            query: list[tuple[str, Any]] = list(self._selectors)
            if limit:
                query.append(("limit", limit))
            if cont:
                query.append(("continue", cont))
            self.connect_attempts += 1
            try:
                body = request(self.api_client, "GET", self.path, query=query, timeout=self.request_timeout)
            except ApiException as e:
                if e.status == 410 and cont:
                    # The continue token outlived etcd's compaction window: start over, unpaged.
                    log.info("%s: paged list expired; listing again in one page", self.resource)
                    items.clear()
                    cont, limit = None, None
                    continue
                raise
            meta = body.get("metadata") or {}
            kind, api_version = body.get("kind") or "", body.get("apiVersion")
            item_kind = kind.removesuffix("List") if kind.endswith("List") else None
            for item in body.get("items") or []:
                obj = self._keep(kept(item))
                if item_kind and "kind" not in obj:
                    obj["kind"] = item_kind
                if api_version and "apiVersion" not in obj:
                    obj["apiVersion"] = api_version
                items[key_of(obj)] = obj
            cont = meta.get("continue")
            if not cont:
                self._replace(items, meta.get("resourceVersion"))
                return

    def _replace(self, items: dict[str, dict], rv: str | None) -> None:
        with self._dispatch_lock:
            with self._store_lock:
                old = self._store
                self._store = items
                self._rv = rv
            self.list_count += 1
            self._need_list = False
            for key, obj in items.items():
                prev = old.get(key)
                if prev is None:
                    self._dispatch("add", obj)
                elif _rv(prev) != _rv(obj):
                    self._dispatch("update", obj, prev)
            for key, prev in old.items():
                if key not in items:
                    self._dispatch("delete", prev)
        if not self._synced.is_set():
            log.debug("%s: synced, %d objects at resourceVersion %s", self.resource, len(items), rv)
            self._synced.set()

    def _watch(self) -> None:
        timeout_seconds = max(1, int(self.watch_timeout * random.uniform(1.0, 1.2)))
        query: list[tuple[str, Any]] = [
            *self._selectors, ("watch", "1"), ("resourceVersion", self.resource_version or ""),
            ("allowWatchBookmarks", "true"), ("timeoutSeconds", timeout_seconds)]
        self.connect_attempts += 1
        # The read timeout only catches a dead connection: the server ends the watch at timeoutSeconds.
        resp = send(self.api_client, "GET", self.path, query=query, body=None, content_type="application/json",
                     timeout=(self.request_timeout, timeout_seconds + self.request_timeout))
        raw = resp.response
        try:
            if resp.status != 200:
                text = resp.read().decode("utf-8", "replace")
                if resp.status == 410:
                    raise _Expired(text[:200])
                raise ApiException.from_response(http_resp=resp, body=text, data=None)
            with self._resp_lock:
                if self._stop.is_set() or not self._unpaused.is_set():
                    return
                self._resp = raw
            self.watch_count += 1
            opened = time.monotonic()
            try:
                for line in _lines(raw):
                    if self._stop.is_set():
                        return
                    if line.strip():
                        self._handle_event(json.loads(line))
            finally:
                with self._resp_lock:
                    self._resp = None
                # A very short server timeout (tests) must not count as a failing connection.
                if time.monotonic() - opened >= min(_HEALTHY_AFTER, timeout_seconds / 2):
                    self._healthy = True
        finally:
            raw.close()

    def _handle_event(self, event: dict) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired(obj.get("message", "Gone"))
            raise WatchError(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        rv = _rv(obj)
        if kind == "BOOKMARK":
            with self._store_lock:
                if rv:
                    self._rv = rv
            self._healthy = True
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s: ignoring watch event of type %r", self.resource, kind)
            return
        obj = self._keep(kept(obj))
        key = key_of(obj)
        with self._dispatch_lock:
            with self._store_lock:
                old = self._store.get(key)
                if kind == "DELETED":
                    self._store.pop(key, None)
                else:
                    self._store[key] = obj
                if rv:
                    self._rv = rv
            self._healthy = True
            if kind == "DELETED":
                self._dispatch("delete", obj)
            elif old is None:
                self._dispatch("add", obj)
            else:
                self._dispatch("update", obj, old)

    def _dispatch(self, what: str, obj: dict, old: dict | None = None) -> None:
        for h in list(self._handlers):
            if what == "add":
                self._call(h.on_add, obj)
            elif what == "update":
                if h.on_update is not None:
                    self._call(h.on_update, old, obj)
            else:
                self._call(h.on_delete, obj)

    def _call(self, fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("%s: event handler %r failed", self.resource, fn)

    def _break_stream(self) -> None:
        with self._resp_lock:
            raw = self._resp
            if raw is None:
                return
            # Only a socket shutdown unblocks a thread sitting in an SSL read; close() from here
            # could wait on the SSL object's lock. The reader closes the response itself.
            try:
                raw.shutdown()
            except Exception:
                sock = getattr(getattr(raw, "connection", None), "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


def _lines(raw: Any) -> Iterator[str]:
    """Lines of a chunked watch response as they arrive (one JSON event per line)."""
    buf = bytearray()
    for chunk in raw.stream(amt=None, decode_content=True):
        buf.extend(chunk)
        while (nl := buf.find(b"\n")) != -1:
            line = bytes(buf[:nl])
            del buf[:nl + 1]
            yield line.decode("utf-8", "replace")
    # A partial last line is a broken stream, not an event: the next watch resumes before it.
