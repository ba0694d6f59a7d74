"""The worker loop's error reporting: a lost connection to the API server is an expected,
retried condition (one log line); only an unexpected exception earns a traceback."""

from __future__ import annotations

import logging

import pytest
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError

from leifur.kube.worker import process_next
from leifur.kube.workqueue import RateLimitingQueue


@pytest.mark.parametrize("error", [
    ReadTimeoutError(None, "/x", "Read timed out. (read timeout=2)"),
    MaxRetryError(None, "/x", ProtocolError("Connection aborted.")),
    ConnectionResetError(104, "Connection reset by peer"),
], ids=["read-timeout", "max-retries", "reset"])
def test_api_connection_errors_are_retried_without_a_traceback(caplog, error):
    queue = RateLimitingQueue("t")
    queue.add("ns/a")
    key = queue.get()

    def sync(_key: str) -> None:
        raise error

    with caplog.at_level(logging.INFO, logger="leifur.kube.worker"):
        assert process_next(queue, sync, key) is False
    [record] = caplog.records
    assert record.exc_info is None and "ns/a" in record.getMessage() and "retry 1" in record.getMessage()
    assert queue.num_requeues("ns/a") == 1


def test_an_unexpected_exception_is_logged_with_its_traceback(caplog):
    queue = RateLimitingQueue("t")
    queue.add("ns/a")
    key = queue.get()

    def sync(_key: str) -> None:
        raise KeyError("spec")

    with caplog.at_level(logging.INFO, logger="leifur.kube.worker"):
        assert process_next(queue, sync, key) is False
    [record] = caplog.records
    assert record.exc_info is not None


def test_losing_the_lease_mid_sync_is_retried_without_a_traceback(caplog):
    from leifur.controller.writes import NotLeader

    queue = RateLimitingQueue("t")
    queue.add("ns/a")
    key = queue.get()

    def sync(_key: str) -> None:
        raise NotLeader("not the leader: write skipped")

    with caplog.at_level(logging.INFO, logger="leifur.kube.worker"):
        assert process_next(queue, sync, key) is False
    [record] = caplog.records
    assert record.exc_info is None and "not the leader" in record.getMessage()
