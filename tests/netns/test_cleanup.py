"""Teardown runs even when a test fails, and a run that was killed outright is cleaned up
by the next one. Each scenario runs in a child process so that this suite survives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from leifur_dev import controlplane, netlab, runtime

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]

# Writes what the environment consists of to $LEIFUR_TEST_REPORT, so the parent can check it is gone.
_REPORT = """
import json, os
def report(cp, lab):
    with open(os.environ["LEIFUR_TEST_REPORT"], "w") as f:
        json.dump({"cp_dir": str(cp.directory), "namespaces": lab.namespaces, "host_link": lab.host_link,
                   "pids": {n: p.pid for n, p in cp.processes.items()},
                   "binaries": {n: str(b) for n, b in cp.binaries.items()},
                   "lab_pid": lab.popen(lab.nodes[0].netns, ["sleep", "300"]).pid}, f)
"""


def _gone(report: dict) -> list[str]:
    """What of the reported environment still exists (empty when all is cleaned up)."""
    left = [ns for ns in report["namespaces"] if ns in netlab.list_netns()]
    left += [link for link in [report["host_link"]] if link in netlab.leftovers()["links"]]
    left += [f"{name} pid {pid}" for name, pid in report["pids"].items()
             if runtime.process_matches(pid, report["binaries"][name])]
    left += [f"sleep pid {report['lab_pid']}"] * runtime.process_matches(report["lab_pid"], "sleep")
    left += [report["cp_dir"]] * Path(report["cp_dir"]).exists()
    return left


def _wait_gone(report: dict, timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _gone(report)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_teardown_runs_when_a_test_fails(tmp_path):
    (tmp_path / "test_fails.py").write_text(_REPORT + textwrap.dedent("""
        def test_fails(control_plane, lab):
            report(control_plane, lab)
            assert False, "deliberate failure"
    """))
    report_path = tmp_path / "report.json"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "leifur_dev.pytest_plugin", "-p", "no:cacheprovider",
         "-q", str(tmp_path / "test_fails.py")],
        cwd=tmp_path, env=dict(os.environ, LEIFUR_TEST_REPORT=str(report_path)),
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 1 and "1 failed" in res.stdout, res.stdout + res.stderr
    report = json.loads(report_path.read_text())
    assert report["namespaces"] and report["pids"]
    assert _gone(report) == []


def test_a_killed_run_is_cleaned_up_by_the_next(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(_REPORT + textwrap.dedent("""
        import sys, time
        from leifur_dev import controlplane, netlab
        cp = controlplane.start()
        lab = netlab.Lab(1).build()
        report(cp, lab)
        print("ready", flush=True)
        time.sleep(300)
    """))
    report_path = tmp_path / "report.json"
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, LEIFUR_TEST_REPORT=str(report_path)))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    report = json.loads(report_path.read_text())
    # SIGKILL runs no teardown: the namespaces are orphans until someone reaps them.
    assert all(ns in netlab.list_netns() for ns in report["namespaces"])

    # The next run reaps them before building its own.
    with netlab.Lab(1):
        controlplane.reap_orphans()
        assert _wait_gone(report) == []
