"""Registration records: orphans (dead owner) are reaped, live and persistent ones are not."""

from __future__ import annotations

import subprocess
import time

from leifur_dev import runtime


def test_orphans_are_reaped_and_live_or_persistent_records_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "runtime_dir", lambda kind: tmp_path / kind)
    (tmp_path / "things").mkdir()
    reg = runtime.Registry("things")
    dead = subprocess.Popen(["true"])
    dead.wait()
    reg.write("orphan", {"owner_pid": dead.pid, "owner_start": 1, "x": 1})
    reg.write("live", runtime.owner_record())
    reg.write("persistent", {"persistent": True})
    # Same pid as us but another start time: a reused pid is not the owner.
    reg.write("reused", {**runtime.owner_record(), "owner_start": -1})

    torn = []
    assert sorted(reg.reap_orphans(lambda name, rec: torn.append(name))) == ["orphan", "reused"]
    assert sorted(torn) == ["orphan", "reused"]
    assert sorted(name for name, _ in reg.records()) == ["live", "persistent"]


def test_kill_process_leaves_a_reused_pid_alone():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        while not runtime.process_matches(proc.pid, "sleep"):  # until the child has exec'd
            time.sleep(0.01)
        runtime.kill_process(proc.pid, "not-the-command-line-of-this-process", grace=0.1)
        assert proc.poll() is None
        runtime.kill_process(proc.pid, "sleep", grace=5)
        assert proc.wait(timeout=5) is not None
    finally:
        proc.kill()
