"""The controller's wiring of pool syncs: a Service's allocation touches its pool's status late
and once per interval; a change to the pool itself is synced at once."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from leifur.controller.app import Controller
from leifur.model.settings import ControllerSettings

DELAY = 0.3


@pytest.fixture
def controller() -> Iterator[Controller]:
    # Nothing is started: no informer, no worker, no Lease; only the queues and their handlers.
    c = Controller(client.ApiClient(), "unit", settings=dataclasses.replace(ControllerSettings(),
                                                                           pool_status_delay=DELAY),
                   leader_elect=False)
    yield c
    c.recorder.stop(0)


def test_many_allocations_touch_a_pool_once_and_late(controller):
    start = time.monotonic()
    for _ in range(100):  # a hundred Services allocated from the pool in a burst
        controller.service_reconciler.enqueue_pool("lan")
    assert len(controller.pool_queue) == 0  # not at once: off the Services' path
    assert controller.pool_queue.get(timeout=5) == "lan"
    assert time.monotonic() - start >= DELAY * 0.9
    controller.pool_queue.done("lan")
    assert controller.pool_queue.get(timeout=DELAY * 2) is None  # once for the hundred

    # Touched while it syncs: synced again after that, not lost.
    controller.service_reconciler.enqueue_pool("lan")
    assert controller.pool_queue.get(timeout=5) == "lan"
    controller.service_reconciler.enqueue_pool("lan")
    controller.pool_queue.done("lan")
    assert controller.pool_queue.get(timeout=5) == "lan"
    controller.pool_queue.done("lan")


def pool(rv: str, addresses: list[str], in_use: int = 0, **meta) -> dict:
    return {"metadata": {"name": "lan", "resourceVersion": rv, "generation": 1, **meta},
            "spec": {"addresses": addresses}, "status": {"ipv4": {"inUse": in_use}}}


def test_a_change_to_the_pool_itself_is_synced_at_once(controller):
    controller.pools._dispatch("add", pool("1", ["192.0.2.0/28"]))
    assert controller.pool_queue.get(timeout=0.05) == "lan"
    controller.pool_queue.done("lan")
    for change in ({"spec": {"addresses": ["192.0.2.0/27"]}},
                   {"metadata": {**pool("3", [])["metadata"], "deletionTimestamp": "2026-12-02T00:00:00Z"}},
                   {"metadata": {**pool("3", [])["metadata"], "labels": {"zone": "b"}}}):
        controller.pools._dispatch("update", {**pool("3", ["192.0.2.0/28"]), **change}, pool("2", ["192.0.2.0/28"]))
        assert controller.pool_queue.get(timeout=0.05) == "lan", change
        controller.pool_queue.done("lan")


def test_a_status_only_update_waits_for_the_next_touch(controller):
    """Our own status write comes back through the informer: syncing it at once would write again
    in a burst of allocations. It is looked at within the delay, so a status someone else
    changed is still put right."""
    controller.pools._dispatch("update", pool("3", ["192.0.2.0/28"], in_use=5), pool("2", ["192.0.2.0/28"]))
    assert controller.pool_queue.get(timeout=DELAY / 3) is None
    assert controller.pool_queue.get(timeout=5) == "lan"
    controller.pool_queue.done("lan")
