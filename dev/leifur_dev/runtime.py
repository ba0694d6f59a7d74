"""Bookkeeping shared by the control-plane launcher and the netns lab.

Each environment registers itself in a runtime directory with the pid of its owner. An
environment whose owner died (a SIGKILLed test run, a crashed demo) is an orphan and is
torn down by the next run before it builds anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets: a bounded sending loop ends early and still reports."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def runtime_dir(kind: str) -> Path:
    """A per-machine directory for registration records, cleared by a reboot where /run exists."""
    base = Path("/run/leifur") if os.access("/run", os.W_OK) else Path(f"/tmp/leifur-{os.getuid()}")
    path = base / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; with the pid it names a process uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_record() -> dict:
    """How a registration names the process that owns it."""
    return {"owner_pid": os.getpid(), "owner_start": start_time(os.getpid())}


def owner_alive(record: dict) -> bool:
    pid = record.get("owner_pid")
    return pid_alive(pid) and start_time(pid) == record.get("owner_start")


def process_matches(pid: int, needle: str) -> bool:
    """True if pid is alive and its command line contains needle (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return needle in cmdline


def kill_process(pid: int, needle: str, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after a grace period; only if the pid is still the process we started."""
    if not process_matches(pid, needle):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop_child(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM a child we started, SIGKILL after a grace period, and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def status_kib(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/PID/status (VmHWM, VmRSS, ...) in KiB, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def memory_kib(pid: int) -> tuple[int, int]:
    """(peak, current) resident memory of a running process in KiB: VmHWM and VmRSS."""
    peak, now = status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS")
    if peak is None or now is None:
        raise ProcessLookupError(f"no memory figures for pid {pid}: has it exited?")
    return peak, now


class ChildProcess:
    """A program we started as a child process (`proc`): stopped or killed by its own PID only."""

    proc: subprocess.Popen | None = None

    def kill(self) -> None:
        """SIGKILL, as a crash, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM (SIGKILL after `timeout`) and reap; its exit code."""
        if self.proc is None:
            return None
        stop_child(self.proc, timeout)
        return self.proc.returncode


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv: list[str], log_path: Path, persistent: bool, env: dict[str, str] | None = None,
          ) -> subprocess.Popen:
    """Start a server process in its own session with its output appended to log_path."""
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps the descriptor
    try:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, preexec_fn=None if persistent else die_with_parent,
        )
    finally:
        log.close()


class Registry:
    """JSON records, one per live environment, of what must be torn down if its owner dies."""

    def __init__(self, kind: str) -> None:
        self.dir = runtime_dir(kind)

    def write(self, name: str, record: dict) -> Path:
        path = self.dir / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.rename(path)
        return path

    def remove(self, name: str) -> None:
        (self.dir / f"{name}.json").unlink(missing_ok=True)

    def records(self) -> list[tuple[str, dict]]:
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append((path.stem, json.loads(path.read_text())))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        return out

    def reap_orphans(self, teardown: Callable[[str, dict], None]) -> list[str]:
        """Tear down every environment whose owner process is gone. Returns their names."""
        reaped = []
        for name, record in self.records():
            if record.get("persistent") or owner_alive(record):
                continue
            teardown(name, record)
            self.remove(name)
            reaped.append(name)
        return reaped
