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


def test_a_change_to_the_pool_itself_is_synced_at_once(controller):
    controller.pools._dispatch("add", {"metadata": {"name": "lan"}})
    assert controller.pool_queue.get(timeout=0.05) == "lan"
    controller.pool_queue.done("lan")
