"""The API's timestamp formats, written (from the clock) and read in one place."""

from __future__ import annotations

import datetime as dt


def now() -> str:
    """metav1.Time: RFC 3339 in UTC, to the second (conditions, Events, records)."""
    return ago(0)


def ago(seconds: float) -> str:
    """metav1.Time of `seconds` before now."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """metav1.MicroTime: RFC 3339 in UTC with microseconds (Leases)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(text: str | None) -> dt.datetime | None:
    """Either format back to an aware datetime; None if absent or unreadable."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
