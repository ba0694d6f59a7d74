"""EventRecorder's bounded queue: a burst drops Normal events before Warnings, and logs its
drops in one line, not one per event (the API side: tests/integration/test_kube_events.py)."""

from __future__ import annotations

import logging
import threading

from leifur.kube import events

OBJ = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns", "uid": "u"}}


def test_a_full_queue_drops_normal_events_first_and_logs_the_burst_once(monkeypatch, caplog):
    written: list[str] = []
    release, busy = threading.Event(), threading.Event()

    def write(_self, _ref, _type, reason, _message, _when) -> None:
        busy.set()
        release.wait(10)
        written.append(reason)

    monkeypatch.setattr(events.EventRecorder, "_write", write)
    rec = events.EventRecorder(None, "leifur-test", host="h", queue_size=3)  # type: ignore[arg-type]
    rec.event(OBJ, "Normal", "first", "m")  # taken by the writer thread, which waits
    assert busy.wait(10)
    caplog.set_level(logging.WARNING, logger=events.__name__)
    for name in ("n1", "n2", "n3"):
        rec.event(OBJ, "Normal", name, "m")
    rec.event(OBJ, "Warning", "w1", "m")  # full: n1, the oldest Normal one, makes room
    rec.event(OBJ, "Normal", "n4", "m")  # full: n4 itself goes
    rec.event(OBJ, "Warning", "w2", "m")  # n2 goes
    rec.event(OBJ, "Warning", "w3", "m")  # n3 goes
    rec.event(OBJ, "Warning", "w4", "m")  # nothing Normal is left: w4 itself goes
    release.set()
    assert rec.flush(10)
    rec.stop()

    assert written == ["first", "w1", "w2", "w3"]
    drops = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert len(drops) == 1 and "dropped 1 events" in drops[0] and "n1" in drops[0]
