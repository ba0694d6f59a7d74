"""Wiring: informers -> work queues -> workers -> reconciles, under leader election."""

from __future__ import annotations

import logging
import threading

from kubernetes import client

from leifur.controller import bgp_status, heartbeat_secret, metrics
from leifur.controller.reconcile import PoolReconciler, ServiceReconciler, State
from leifur.controller.writes import CustomWriter, ServiceWriter
from leifur.kube.client import list_all
from leifur.kube.events import EventRecorder
from leifur.kube.informer import Informer
from leifur.kube.kept import kept
from leifur.kube.leader import LeaderElector
from leifur.kube.worker import start_workers
from leifur.kube.workqueue import RateLimitingQueue
from leifur.model import names
from leifur.model.objects import key_of
from leifur.model.settings import ControllerSettings

log = logging.getLogger(__name__)


def _without_status(obj: dict) -> tuple:
    """An object's content but its status and what every write changes (resourceVersion)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    return meta, {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class Controller:
    """`leader_elect=False` writes without a Lease: for a single replica only."""

    def __init__(
        self,
        api_client: client.ApiClient,
        identity: str,
        load_balancer_class: str | None = None,
        settings: ControllerSettings | None = None,
        *,
        leader_elect: bool = True,
    ) -> None:
        settings = settings or ControllerSettings()
        self.identity = identity
        self.settings = settings
        self.workers = settings.workers
        self.stop_event = threading.Event()
        self.lost_leadership = threading.Event()
        self._leading = threading.Event()
        self._leading_failed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._secret_thread: threading.Thread | None = None

        self.services = Informer(api_client, "/api/v1/services", "services")
        self.namespaces = Informer(api_client, "/api/v1/namespaces", "namespaces")
        self.pools = Informer(api_client, f"/apis/{names.API_VERSION}/{names.POOLS}", names.POOLS)
        # The agents' records: the address conflicts they report become a condition on the Service.
        self.records = Informer(api_client, f"/apis/{names.API_VERSION}/{names.L2NODESTATUSES}", names.L2NODESTATUSES)
        self.informers = (self.services, self.namespaces, self.pools, self.records)
        # BGP mode's kinds: only their conditions depend on them, so an installation without their
        # CRDs (an upgrade that skipped them) still allocates: they are not waited for.
        self.bgp = {kind: Informer(api_client, f"/apis/{names.API_VERSION}/{plural}", plural)
                    for kind, plural in bgp_status.KINDS.items()}
        self.service_queue = RateLimitingQueue("services")
        self.pool_queue = RateLimitingQueue(names.POOLS)
        self.bgp_queue = RateLimitingQueue("bgp")
        self.queues = (self.service_queue, self.pool_queue, self.bgp_queue)
        self.recorder = EventRecorder(api_client, names.CONTROLLER_NAME, host=identity)
        self.state = State()
        self.api_client = api_client
        self.elector: LeaderElector | None = None
        may_write = self._may_write
        self.service_reconciler = ServiceReconciler(
            self.state, self.services, self.namespaces, ServiceWriter(api_client, may_write), self.recorder,
            load_balancer_class, self._touch_pool, self.service_queue.add, self.records,
        )
        self.pool_reconciler = PoolReconciler(
            self.state, self.pools, self.services, CustomWriter(api_client, may_write), self.recorder,
            self.enqueue_all_services,
        )
        self.bgp_reconciler = bgp_status.BGPStatusReconciler(
            self.bgp, self.pools, self.records, CustomWriter(api_client, may_write).patch_any_status, self.recorder)
        self._wire_handlers()
        if leader_elect:
            self.elector = LeaderElector(
                api_client, settings.lease_namespace, settings.lease_name, identity, settings.leader,
                on_started_leading=self._start_leading, on_stopped_leading=self._stop_leading,
            )

    def _touch_pool(self, name: str) -> None:
        """A Service took or let go of an IP of this pool: its status (usage) is due, but not at once.
        However many Services change, the pool is synced at most once per `pool_status_delay`, and
        its status writes and usage counts (over every holder) stay off the Services' path. A change
        to the pool itself is still synced at once (its informer handler)."""
        self.pool_queue.add_after(name, self.settings.pool_status_delay)

    def _may_write(self) -> bool:
        return self.elector is None or self.elector.is_leader()

    # -- event handlers: they only enqueue keys -------------------------------------------

    def _wire_handlers(self) -> None:
        def svc_key(obj: dict) -> None:
            self.service_queue.add(key_of(obj))

        self.services.add_handler(svc_key, lambda _old, new: svc_key(new), svc_key)

        def pool_key(obj: dict) -> None:
            self.pool_queue.add(key_of(obj))

        def pool_update(old: dict, new: dict) -> None:
            if _without_status(old) == _without_status(new):
                # Only the status changed: mostly our own write coming back. What it shows is
                # checked with the next touch, at most a second later, not at once: syncing at
                # once would double the status writes of a burst of allocations.
                self._touch_pool(key_of(new))
            else:
                pool_key(new)

        self.pools.add_handler(pool_key, pool_update, pool_key)

        def ns_services(ns: dict) -> None:
            prefix = ns["metadata"]["name"] + "/"
            for key in self.services.keys():
                if key.startswith(prefix):
                    self.service_queue.add(key)

        def ns_update(old: dict, new: dict) -> None:
            if (old["metadata"].get("labels") or {}) != (new["metadata"].get("labels") or {}):
                ns_services(new)

        # On add too: a Service synced before its Namespace reached the cache saw no labels.
        self.namespaces.add_handler(on_add=ns_services, on_update=ns_update)

        def conflicted(record: dict) -> None:
            for c in (record.get("status") or {}).get("conflicts") or []:
                for key in (c.get("services") or []) if isinstance(c, dict) else []:
                    self.service_queue.add(str(key))

        def record_update(old: dict, new: dict) -> None:
            # Both: a conflict gone from the record must clear its condition.
            if (old.get("status") or {}).get("conflicts") != (new.get("status") or {}).get("conflicts"):
                conflicted(old)
                conflicted(new)

        self.records.add_handler(conflicted, record_update, conflicted)

        def bgp_all(*_objs: dict) -> None:
            self.enqueue_bgp()

        def sessions_changed(old: dict, new: dict) -> None:
            if (old.get("status") or {}).get("bgp") != (new.get("status") or {}).get("bgp"):
                self.enqueue_bgp()

        # A BGP object's conditions depend on the others and on the pools (an advertisement
        # selecting nothing), and a peer's on the nodes' sessions: any change re-checks them all.
        for informer in self.bgp.values():
            informer.add_handler(bgp_all, bgp_all, bgp_all)
        def pool_relabelled(old: dict, new: dict) -> None:
            # Advertisements select pools by name or labels: a status write changes neither.
            if old["metadata"].get("labels") != new["metadata"].get("labels"):
                self.enqueue_bgp()

        self.pools.add_handler(bgp_all, pool_relabelled, bgp_all)
        self.records.add_handler(bgp_all, sessions_changed, bgp_all)

    def enqueue_bgp(self) -> None:
        for kind, informer in self.bgp.items():
            for name in informer.keys():
                self.bgp_queue.add(f"{kind}/{name}")

    def enqueue_all_services(self) -> None:
        for key in self.services.keys():
            self.service_queue.add(key)
        for name in self.pools.keys():
            self.pool_queue.add(name)

    # -- lifecycle ------------------------------------------------------------------------

    def synced(self) -> bool:
        return all(i.has_synced() for i in self.informers)

    def ready(self) -> bool:
        """Standby replicas are ready once their caches are warm; the leader once it has rebuilt."""
        return self.synced() and (self.elector is None or not self.elector.is_leader() or self._leading.is_set())

    def healthy(self) -> bool:
        if self.lost_leadership.is_set() or not all(t.is_alive() for t in self._threads):
            return False
        # Holding the Lease without workers would stall every allocation: report it, get restarted.
        leading = self.elector is None or self.elector.is_leader()
        return not (leading and self._leading_failed.is_set())

    def start(self) -> None:
        # Not under the Lease: creating a missing Secret is safe from any replica (the second gets
        # AlreadyExists), and the agents wait for it. It ends once done; healthy() does not watch it.
        if self.settings.create_heartbeat_secret:
            self._secret_thread = heartbeat_secret.start(self.api_client, self.settings.lease_namespace,
                                                         self.settings.heartbeat_secret, self.stop_event)
        else:
            log.info("heartbeat key Secret %s/%s: not created by the controller (--no-create-heartbeat-secret); "
                     "the agents wait until it exists", self.settings.lease_namespace, self.settings.heartbeat_secret)
        for informer in (*self.informers, *self.bgp.values()):
            informer.start()
        if self.elector is None:
            threading.Thread(target=self._start_leading, name="lead", daemon=True).start()
        else:
            self.elector.start()

    def _start_leading(self) -> None:
        try:
            self._lead()
        except Exception:
            log.exception("%s: could not start leading; exiting to be restarted", self.identity)
            self._leading_failed.set()
            self.lost_leadership.set()

    def _lead(self) -> None:
        log.info("%s is the leader: waiting for caches, then rebuilding allocations", self.identity)
        metrics.IS_LEADER.set(1)
        while not self.stop_event.is_set():
            if all(i.wait_for_sync(1.0) for i in self.informers):
                break
        if self.stop_event.is_set():
            return
        # Pools first, then every IP already in Services' status, before the first new allocation.
        self.state.refresh_pools(self.pools.objects())
        # Paged, and only what the cache would keep of each: one LIST of 5,000 Services, decoded
        # whole, was most of the controller's peak memory (101 against 83 MB once quiet).
        fresh = list_all(self.api_client, "/api/v1/services", keep=kept)
        self.service_reconciler.rebuild(fresh)
        self.enqueue_all_services()
        self._threads += start_workers(self.service_queue, self.service_reconciler.sync, self.workers,
                                       self.stop_event, "service", key_field="service")
        self._threads += start_workers(self.pool_queue, self.pool_reconciler.sync, 1, self.stop_event, "pool",
                                       key_field="pool")
        self.enqueue_bgp()
        self._threads += start_workers(self.bgp_queue, self.bgp_reconciler.sync, 1, self.stop_event, "bgp",
                                       key_field="object")
        self._leading.set()
        log.info("%s: workers started", self.identity)

    def _stop_leading(self) -> None:
        if self.stop_event.is_set():
            return  # our own graceful stop: the Lease is being released
        # Another replica may be leading already: no further writes from here.
        log.error("%s lost the leader Lease; stopping", self.identity)
        metrics.IS_LEADER.set(0)
        self.lost_leadership.set()
        # Workers stop taking keys now; the main thread then calls stop() and exits.
        self.stop_event.set()
        for queue in self.queues:
            queue.shut_down()

    def stop(self) -> None:
        self.stop_event.set()
        for queue in self.queues:
            queue.shut_down()
        for t in self._threads:
            t.join(timeout=20)
        if self._secret_thread is not None:
            self._secret_thread.join(timeout=1)  # at worst in one request; it is a daemon thread
        if self.elector is not None:
            # Hand over at once only if no sync of ours can still write.
            quiet = not any(t.is_alive() for t in self._threads)
            self.elector.stop(release=quiet and not self.lost_leadership.is_set())
        for informer in (*self.informers, *self.bgp.values()):
            informer.stop()
        self.recorder.flush(2.0)
        self.recorder.stop()
