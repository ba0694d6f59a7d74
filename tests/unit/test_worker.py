"""The worker loop's error reporting: a lost connection to the API server or a lost Lease is an
expected, retried condition (one log line); only an unexpected exception earns a traceback."""

from __future__ import annotations

import logging

import pytest
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError

from leifur.controller.writes import NotLeader
from leifur.kube.worker import process_next
from leifur.kube.workqueue import RateLimitingQueue


def fail_once(caplog, error: Exception) -> tuple[logging.LogRecord, RateLimitingQueue]:
    """Run one sync of "ns/a" that raises `error`; the one log record and the queue."""
    queue = RateLimitingQueue("t")
    queue.add("ns/a")
    key = queue.get()

    def sync(_key: str) -> None:
        raise error

    with caplog.at_level(logging.INFO, logger="leifur.kube.worker"):
        assert process_next(queue, sync, key) is False
    [record] = caplog.records
    return record, queue


@pytest.mark.parametrize("error", [
    ReadTimeoutError(None, "/x", "Read timed out. (read timeout=2)"),
    MaxRetryError(None, "/x", ProtocolError("Connection aborted.")),
    ConnectionResetError(104, "Connection reset by peer"),
    NotLeader("not the leader: write skipped"),
], ids=["read-timeout", "max-retries", "reset", "lost-lease"])
def test_expected_failures_are_retried_without_a_traceback(caplog, error):
    record, queue = fail_once(caplog, error)
    assert record.exc_info is None and "ns/a" in record.getMessage() and "retry 1" in record.getMessage()
    assert queue.num_requeues("ns/a") == 1


def test_an_unexpected_exception_is_logged_with_its_traceback(caplog):
    record, queue = fail_once(caplog, KeyError("spec"))
    assert record.exc_info is not None
    assert queue.num_requeues("ns/a") == 1
