"""One FRR instance (zebra, bgpd, bfdd) inside a lab node's network namespace.

The layout is a plain convention, because a node's agent is given the same paths as flags and
drives the instance with the same commands (vtysh, frr-reload.py):

    DIR/frr.conf      the integrated configuration: applied at start (`vtysh -b`), and reloaded
                      by `frr-reload.py --reload` after it changed
    DIR/vtysh.conf    `service integrated-vtysh-config`, which frr-reload.py requires
    DIR/<daemon>.vty  the vty sockets (zebra, bgpd, bfdd): `vtysh --vty_socket DIR`
    DIR/<daemon>.pid  pid files; DIR/zserv.api zebra's socket; DIR/bfdd.sock bfdd's control socket
    DIR/<daemon>.log  each daemon's log

DIR is `netlab.Lab.state_dir / "frr-<node>"` (under /run/leifur/lab-state/<lab id>/).

What FRR 8.4 needs to run several instances on one machine, found by trying:
- each daemon: `--vty_socket DIR` (vty sockets; the default /var/run/frr is shared and absent),
  `-i DIR/<daemon>.pid`, `-z DIR/zserv.api` (zebra listens there, bgpd and bfdd connect; the
  default is shared), `-A 127.0.0.1 -P 0` (no TCP vty), `--log stdout` (to the log file we open);
  bfdd also `--bfdctl DIR/bfdd.sock`. BGP's port 179 needs nothing: each daemon is in its own
  network namespace.
- `-N pathspace` is not used: it only moves the defaults to /var/run/frr/<name>/ and
  /etc/frr/<name>/, outside the lab's directories.
- user: the daemons drop to frr:frr (the default `-u frr -g frr`). `-u root -g root` is refused
  ("privs_init: user(root) is not part of vty group specified(frrvty)"), and zebra and bfdd have
  no option to skip it (bgpd's -S only). So DIR is owned by frr and every directory above it is
  traversable (pytest's 0700 tmp_path is not: hence /run).
- config: the daemons start with `-f /dev/null` and the integrated file is applied by
  `vtysh -b --config_dir DIR`, as Debian's init does: a daemon given the integrated file with -f
  parses every other daemon's lines too and logs an error for each.
- `frr-reload.py --reload --confdir DIR --rundir DIR --vty_socket DIR --bindir /usr/bin DIR/frr.conf`
  applies the difference; with the file named DIR/frr.conf it writes nothing back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from leifur_dev import netlab

DAEMONS = ("zebra", "bgpd", "bfdd")
SBIN = Path("/usr/lib/frr")
RELOAD = SBIN / "frr-reload.py"
_USER = "frr"


def directory(lab: netlab.Lab, host: netlab.Host) -> Path:
    """The instance directory of `host`'s FRR in `lab` (the convention above)."""
    return lab.state_dir / f"frr-{host.name}"


def daemon_argv(daemon: str, dir: Path) -> list[str]:
    """The command line of one daemon of the instance in `dir`."""
    argv = [str(SBIN / daemon), "-f", "/dev/null", "--vty_socket", str(dir), "-i", str(dir / f"{daemon}.pid"),
            "-z", str(dir / "zserv.api"), "-A", "127.0.0.1", "-P", "0", "--log", "stdout"]
    return argv + (["--bfdctl", str(dir / "bfdd.sock")] if daemon == "bfdd" else [])


def vtysh_argv(dir: Path, *commands: str) -> list[str]:
    """vtysh against the instance in `dir`, one -c per command."""
    return ["vtysh", "--vty_socket", str(dir), "--config_dir", str(dir), *(a for c in commands for a in ("-c", c))]


def reload_argv(dir: Path) -> list[str]:
    """frr-reload.py applying DIR/frr.conf to the running instance in `dir`."""
    return ["python3", str(RELOAD), "--reload", "--stdout", "--bindir", "/usr/bin", "--confdir", str(dir),
            "--rundir", str(dir), "--vty_socket", str(dir), str(dir / "frr.conf")]


class FRR:
    """FRR in one node namespace of a lab: `start(config)`, `vtysh`, `reload(config)`, `stop`.

    The daemons are ended by PID in stop(); the lab's teardown kills whatever is left in its
    namespaces and removes the directory, so a failed test leaves nothing behind."""

    def __init__(self, lab: netlab.Lab, host: netlab.Host) -> None:
        self.lab, self.host = lab, host
        self.dir = directory(lab, host)
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def config_path(self) -> Path:
        return self.dir / "frr.conf"

    def start(self, config: str, timeout: float = 60) -> FRR:
        self.dir.mkdir(mode=0o755, exist_ok=True)
        self.config_path.write_text(config)
        (self.dir / "vtysh.conf").write_text("service integrated-vtysh-config\n")
        shutil.chown(self.dir, _USER, _USER)
        # Sockets of an instance that was killed (a restart): the waits below must see the new ones.
        for stale in (self.dir / "zserv.api", *(self.dir / f"{d}.vty" for d in DAEMONS)):
            stale.unlink(missing_ok=True)
        for path in self.dir.iterdir():
            shutil.chown(path, _USER, _USER)
        for daemon in DAEMONS:
            with open(self.dir / f"{daemon}.log", "a") as log:
                self.procs[daemon] = self.lab.popen(self.host.netns, daemon_argv(daemon, self.dir),
                                                    stdout=log, stderr=subprocess.STDOUT)
            if daemon == "zebra":  # bgpd and bfdd connect to its socket as they start
                self._wait_for("zserv.api", timeout)
        for daemon in DAEMONS:
            self._wait_for(f"{daemon}.vty", timeout)
        self._run(["vtysh", "--vty_socket", str(self.dir), "--config_dir", str(self.dir), "-b"])
        return self

    def _wait_for(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (self.dir / name).exists():
            for daemon, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{daemon} in {self.host.name} exited with {proc.returncode}: "
                                       f"{self.log_tail(daemon)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"FRR in {self.host.name}: no {name} within {timeout:.0f}s")
            time.sleep(0.1)

    def _run(self, argv: list[str], timeout: float = 60) -> str:
        res = self.lab.run(self.host.netns, argv, check=False, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.host.name} failed ({res.returncode}): "
                               f"{res.stdout[-2000:]}{res.stderr[-2000:]}")
        return res.stdout

    def vtysh(self, *commands: str) -> str:
        return self._run(vtysh_argv(self.dir, *commands))

    def vtysh_json(self, command: str) -> dict:
        """A `show ... json` command's answer."""
        return json.loads(self.vtysh(command) or "{}")

    def reload(self, config: str) -> str:
        """Write `config` as DIR/frr.conf and apply the difference with frr-reload.py."""
        self.config_path.write_text(config)
        shutil.chown(self.config_path, _USER, _USER)
        return self._run(reload_argv(self.dir), timeout=120)

    def sessions(self) -> dict[str, str]:
        """Neighbour address -> BGP state ("Established", "Active", ...), from bgpd."""
        summary = self.vtysh_json("show bgp neighbors json")
        return {addr: n.get("bgpState", "") for addr, n in summary.items() if isinstance(n, dict)}

    def bfd_peers(self) -> dict[str, str]:
        """BFD peer address -> status ("up", "down", ...), from bfdd."""
        peers = json.loads(self.vtysh("show bfd peers json") or "[]")
        return {p["peer"]: p.get("status", "") for p in peers}

    def pids(self) -> dict[str, int]:
        return {d: p.pid for d, p in self.procs.items() if p.poll() is None}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """End the daemons by PID: `sig` (SIGKILL for a crash), then SIGKILL whatever is left."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        self.procs.clear()

    def log_tail(self, daemon: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.dir / f"{daemon}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
