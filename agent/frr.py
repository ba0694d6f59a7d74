"""The node's FRR instance: configuration applied with frr-reload, sessions read back with vtysh.

The agent owns the BGP part of FRR's configuration (frr_config.py renders it): each apply writes
the file the daemons were started from and has /usr/lib/frr/frr-reload.py make the running
daemons match it, which changes only what differs (a session is not reset by an unrelated
change). Reading is `vtysh -c 'show ... json'`. Both talk to the instance whose vty sockets are
in `vty_dir`, so one machine can run one instance per network namespace.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from leifur.announce.bgp_intent import Session, SessionState

from .frr_config import keep_unmanaged

log = logging.getLogger(__name__)

VTYSH = "/usr/bin/vtysh"
RELOAD = "/usr/lib/frr/frr-reload.py"
ESTABLISHED = "Established"
NOT_CONFIGURED = "NotConfigured"  # a session of the intent that bgpd does not know


class FRRError(Exception):
    """A vtysh or frr-reload call that failed (the daemons unreachable, a line refused)."""


@dataclass(frozen=True)
class Progress:
    """What one established session has been sent, as bgpd counts it."""

    established: bool
    prefixes: int  # in the adj-RIB-out, every address family
    updates_sent: int
    queued: int  # UPDATEs built but not yet written to the socket

    def withdrawn_since(self, before: Progress) -> bool:
        """Everything advertised at `before` has been withdrawn and the withdrawals written out
        (or the session is gone, which withdraws at the peer too)."""
        if not self.established or before.prefixes == 0:
            return True
        return self.prefixes == 0 and self.queued == 0 and self.updates_sent > before.updates_sent


class FRR:
    def __init__(self, config_path: str, vty_dir: str, *, vtysh: str = VTYSH, reload: str = RELOAD,
                 timeout: float = 30.0) -> None:
        self.config_path = config_path
        self.vty_dir = vty_dir
        self.vtysh = vtysh
        self.reload = reload
        self.timeout = timeout

    def apply(self, text: str) -> None:
        """Make the running daemons' configuration `text` (plus what they run that it does not manage)."""
        merged = keep_unmanaged(text, self._vtysh("show running-config"))
        directory = os.path.dirname(os.path.abspath(self.config_path))
        # Written whole and renamed: a daemon restarting meanwhile reads the old file or the new, never half.
        fd, tmp = tempfile.mkstemp(prefix=".frr-", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(merged)
            os.chmod(tmp, 0o640)  # it holds the sessions' passwords
            os.replace(tmp, self.config_path)
        except BaseException:
            os.unlink(tmp)
            raise
        # --stdout: its log to us, not to /var/log/frr; --rundir: its scratch files next to the config.
        self._run([self.reload, "--reload", "--stdout", "--log-level", "error", "--confdir", directory,
                   "--rundir", directory, "--vty_socket", self.vty_dir, "--bindir", os.path.dirname(self.vtysh),
                   self.config_path])

    def show(self, command: str) -> Any:
        """The JSON answer of a `show ... json` command."""
        out = self._vtysh(command)
        try:
            return json.loads(out)
        except ValueError as e:
            raise FRRError(f"vtysh -c {command!r} did not answer JSON: {out[:200]!r}") from e

    def sessions(self, sessions: Iterable[Session]) -> list[SessionState]:
        """Each session as bgpd and bfdd report it."""
        return session_states(sessions, self.show("show bgp neighbors json"), self.show("show bfd peers json"))

    def progress(self) -> dict[str, Progress]:
        """Neighbour address -> what bgpd has sent it."""
        return progress(self.show("show bgp neighbors json"))

    def withdraw(self, commands: list[str], timeout: float, sleep: Callable[[float], None] = time.sleep) -> bool:
        """Run `commands` (frr_config.withdrawal: the same sessions, no routes), then wait until
        every established session has been sent the withdrawals; False if that did not happen
        within `timeout` seconds."""
        before = self.progress()
        self._vtysh(*commands)
        deadline = time.monotonic() + timeout
        while True:
            now = self.progress()
            pending = [a for a, p in before.items() if not now.get(a, _GONE).withdrawn_since(p)]
            if not pending:
                return True
            if time.monotonic() >= deadline:
                log.warning("withdrawals to %s not sent within %.1f s", ", ".join(pending), timeout)
                return False
            sleep(0.05)

    def _vtysh(self, *commands: str) -> str:
        """One vtysh run of `commands`, in order."""
        return self._run([self.vtysh, "--vty_socket", self.vty_dir, *(a for c in commands for a in ("-c", c))])

    def _run(self, argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FRRError(f"{os.path.basename(argv[0])}: {e}") from e
        if done.returncode != 0:
            said = (done.stdout + done.stderr).strip().splitlines()
            raise FRRError(f"{os.path.basename(argv[0])} exited {done.returncode}: {' / '.join(said[-5:])[:500]}")
        return done.stdout


_GONE = Progress(False, 0, 0, 0)


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def progress(neighbors: Mapping[str, Any]) -> dict[str, Progress]:
    """Neighbour address -> Progress, from `show bgp neighbors json`."""
    out = {}
    for address, n in neighbors.items():
        if not isinstance(n, dict):
            continue
        families = [f for f in (n.get("addressFamilyInfo") or {}).values() if isinstance(f, dict)]
        stats = n.get("messageStats") or {}
        out[_canonical(address)] = Progress(
            n.get("bgpState") == ESTABLISHED,
            sum(int(f.get("sentPrefixCounter", 0)) for f in families),
            int(stats.get("updatesSent", 0)),
            int(stats.get("depthOutq", 0)) + sum(int(f.get("packetQueueLength", 0)) for f in families))
    return out


def session_states(sessions: Iterable[Session], neighbors: Mapping[str, Any],
                   bfd_peers: Iterable[Mapping[str, Any]]) -> list[SessionState]:
    """The sessions as `show bgp neighbors json` and `show bfd peers json` report them; a session
    bgpd does not know (not configured) is "NotConfigured"."""
    by_address = {_canonical(a): n for a, n in neighbors.items() if isinstance(n, dict)}
    bfd = {_canonical(str(p.get("peer"))): str(p.get("status", "unknown")) for p in bfd_peers if p.get("peer")}
    sent = progress(neighbors)
    out = []
    for s in sessions:
        address = _canonical(s.address)
        n = by_address.get(address)
        if n is None:
            out.append(SessionState(s.peer, address, NOT_CONFIGURED))
            continue
        state = str(n.get("bgpState", "Unknown"))
        # Up time while established; otherwise the time since the session last went down, if it ever did.
        ms = n.get("bgpTimerUpMsec") if state == ESTABLISHED else n.get("lastResetTimerMsecs")
        out.append(SessionState(s.peer, address, state, ms / 1000 if isinstance(ms, int) else None,
                                sent[address].prefixes if state == ESTABLISHED else 0,
                                bfd.get(address, "down") if s.bfd is not None else None))
    return out
