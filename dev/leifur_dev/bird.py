"""The lab's router: BIRD 2 in the router namespace of a `netlab.Lab(router=True)`.

One BGP neighbour per node (its LAN IPv4 address, IPv4 and IPv6 channels on the one session; or
its IPv6 address, IPv6 only),
importing everything and exporting nothing to the nodes; the learnt routes go to the router's
kernel, equal paths merged into one multipath route (ECMP), over which the router forwards the
remote client's traffic. Readers parse birdc's text (it has no machine-readable output) and
`ip -j route`.

Files: `Lab.state_dir / "bird"`: bird.conf, bird.ctl (the control socket), bird.pid, bird.log.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from leifur_dev import netlab

ROUTER_ASN = 64500
NODE_ASN = 64512


@dataclass(frozen=True)
class BFDTimers:
    """BIRD's side of BFD with every node (milliseconds)."""

    min_rx_ms: int = 100
    min_tx_ms: int = 100
    multiplier: int = 3


@dataclass(frozen=True)
class RouterConfig:
    """What the router's BGP looks like. node_asn == router_asn makes the sessions iBGP (local
    preference is honoured only there). hold_time 0: BIRD's default (240 s)."""

    router_asn: int = ROUTER_ASN
    node_asn: int = NODE_ASN
    bfd: BFDTimers | None = None
    graceful_restart: bool = False
    hold_time: int = 0
    password: str = ""
    # 6: the sessions run over the nodes' and the router's IPv6 LAN addresses and carry IPv6 only
    # (IPv4 over an IPv6 session would need extended next hops, which the lab does not set up).
    session_family: int = 4


@dataclass(frozen=True)
class RoutePath:
    """One path of a prefix in BIRD's table."""

    protocol: str  # the neighbour's protocol name: the node's name
    next_hops: tuple[str, ...]
    best: bool
    attributes: dict[str, str] = field(default_factory=dict)  # BGP.local_pref -> "150", ...

    @property
    def local_pref(self) -> int | None:
        value = self.attributes.get("BGP.local_pref")
        return int(value) if value is not None else None

    @property
    def communities(self) -> set[str]:
        """Standard communities as "A:B"."""
        return {f"{a}:{b}" for a, b in re.findall(r"\((\d+),\s*(\d+)\)", self.attributes.get("BGP.community", ""))}

    @property
    def large_communities(self) -> set[str]:
        """Large communities as "A:B:C"."""
        found = re.findall(r"\((\d+),\s*(\d+),\s*(\d+)\)", self.attributes.get("BGP.large_community", ""))
        return {":".join(c) for c in found}


def render(config: RouterConfig, router_id: str, neighbours: dict[str, str], local: str = "") -> str:
    """bird.conf for the router with LAN IPv4 address `router_id`, its sessions from `local` (the
    same by default); neighbours: protocol name -> address."""
    bgp = [f"local {local or router_id} as {config.router_asn};"]
    if config.hold_time:
        bgp.append(f"hold time {config.hold_time};")
    # Retry soon after a lost session (BIRD waits 60..300 s after an error by default): a lab's
    # sessions come back within seconds of a restart or a reconnected cable.
    bgp.append("connect retry time 5; error wait time 1, 10;")
    bgp.append(f"graceful restart {'on' if config.graceful_restart else 'off'};")
    if config.bfd is not None:
        bgp.append("bfd on;")
    if config.password:
        bgp.append(f'password "{config.password}";')
    # direct: the nodes are on the LAN (BIRD takes iBGP for multihop, with recursive next hops).
    bgp.append("direct;")
    for family in ("ipv4", "ipv6") if config.session_family == 4 else ("ipv6",):
        bgp.append(f"{family} {{ import all; export none; }};")
    lines = [
        f"router id {router_id};",
        "log stderr all;",
        "timeformat protocol iso long;",
        "protocol device { scan time 10; }",
    ]
    for family in ("ipv4", "ipv6"):
        lines.append(f"protocol kernel kernel_{family} {{ {family} {{ import none; export all; }}; "
                     "merge paths on; }")
    if config.bfd is not None:
        b = config.bfd
        lines.append(f'protocol bfd {{ interface "*" {{ min rx interval {b.min_rx_ms} ms; '
                     f"min tx interval {b.min_tx_ms} ms; multiplier {b.multiplier}; }}; }}")
    lines.append("template bgp nodes {\n  " + "\n  ".join(bgp) + "\n}")
    for name, address in neighbours.items():
        lines.append(f"protocol bgp {name} from nodes {{ neighbor {address} as {config.node_asn}; }}")
    return "\n".join(lines) + "\n"


def parse_routes(text: str) -> dict[str, list[RoutePath]]:
    """`birdc show route all ...` -> prefix -> its paths."""
    routes: dict[str, list[RoutePath]] = {}
    prefix = ""
    current: dict | None = None

    def close() -> None:
        if current is not None:
            routes.setdefault(prefix, []).append(RoutePath(current["protocol"], tuple(current["hops"]),
                                                       current["best"], current["attrs"]))

    for line in text.splitlines():
        head = re.match(r"^(\S+)?\s+unicast \[(\S+) [^\]]*\](\s+\*)?", line)
        if head:
            close()
            prefix = head.group(1) or prefix
            current = {"protocol": head.group(2), "hops": [], "best": bool(head.group(3)), "attrs": {}}
            continue
        if current is None:
            continue
        if via := re.match(r"^\s+via (\S+) on \S+", line):
            current["hops"].append(via.group(1))
        elif attr := re.match(r"^\s+(BGP\.\w+|Type): (.*)$", line):
            current["attrs"][attr.group(1)] = attr.group(2).strip()
    close()
    return routes


def parse_protocols(text: str) -> dict[str, dict[str, str]]:
    """`birdc show protocols all` -> protocol name -> {"proto", "state", "bgp_state", "neighbor"}."""
    out: dict[str, dict[str, str]] = {}
    name = ""
    for line in text.splitlines():
        head = re.match(r"^(\S+)\s+(\S+)\s+(\S+)\s+(up|down|start|stop|flush)\b", line)
        if head and head.group(1) != "Name":
            name = head.group(1)
            out[name] = {"proto": head.group(2), "state": head.group(4)}
        elif name and (m := re.match(r"^\s+BGP state:\s+(\S+)", line)):
            out[name]["bgp_state"] = m.group(1)
        elif name and (m := re.match(r"^\s+Neighbor address:\s+(\S+)", line)):
            out[name]["neighbor"] = m.group(1)
    return out


def parse_bfd_sessions(text: str) -> dict[str, str]:
    """`birdc show bfd sessions` -> peer address -> state ("Up", "Down", "Init")."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and re.match(r"^[0-9a-fA-F:.]+$", parts[0]) and any(c in parts[0] for c in ".:"):
            out[parts[0]] = parts[2]
    return out


def multipath_next_hops(routes: list[dict]) -> list[str]:
    """`ip -j route show PREFIX` -> the gateways of its route (one, or each of a multipath route)."""
    hops = []
    for r in routes:
        hops += [h["gateway"] for h in r.get("nexthops", []) if "gateway" in h]
        if "gateway" in r:
            hops.append(r["gateway"])
    return sorted(hops)


class Router:
    """BIRD in the lab's router namespace, one neighbour per node. Started by `start()`, killed by
    PID in `stop()` (and by the lab's teardown, whatever happens)."""

    def __init__(self, lab: netlab.Lab, config: RouterConfig | None = None) -> None:
        assert lab.router_host is not None, "the lab has no router: netlab.Lab(router=True)"
        self.lab, self.host = lab, lab.router_host
        self.config = config or RouterConfig()
        self.dir = lab.state_dir / "bird"
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "bird.ctl"

    @property
    def local_address(self) -> str:
        """The router's end of every session (what the nodes peer with)."""
        return self.host.ip6 if self.config.session_family == 6 else self.host.ip4

    def neighbours(self) -> dict[str, str]:
        return {h.name: h.ip6 if self.config.session_family == 6 else h.ip4 for h in self.lab.nodes}

    def start(self, recovery: bool = False, timeout: float = 60) -> Router:
        """Start BIRD (`recovery`: with graceful-restart recovery, -R, as after a crash)."""
        self.dir.mkdir(mode=0o755, exist_ok=True)
        conf = self.dir / "bird.conf"
        conf.write_text(render(self.config, self.host.ip4, self.neighbours(), self.local_address))
        argv = ["bird", "-f", "-c", str(conf), "-s", str(self.socket), "-P", str(self.dir / "bird.pid"),
                *(["-R"] if recovery else [])]
        with open(self.dir / "bird.log", "a") as log:
            self.proc = self.lab.popen(self.host.netns, argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while self._birdc("show status", check=False).returncode != 0:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bird exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bird did not answer on {self.socket} within {timeout:.0f}s")
            time.sleep(0.2)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """End BIRD by its PID (SIGKILL: a crash; SIGTERM: BIRD closes its sessions first)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, sig: int = signal.SIGKILL, recovery: bool = False) -> Router:
        self.stop(sig)
        return self.start(recovery=recovery)

    def _birdc(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        # -r: restricted to reading. birdc reaches BIRD by the socket's path, from any namespace.
        res = subprocess.run(["birdc", "-r", "-s", str(self.socket), *command.split()],
                             capture_output=True, text=True, timeout=30)
        if check and res.returncode != 0:
            raise RuntimeError(f"birdc {command} failed: {res.stdout}{res.stderr}")
        return res

    def birdc(self, command: str) -> str:
        return self._birdc(command).stdout

    # -- readers ----------------------------------------------------------------------------------

    def paths(self, prefix: str) -> list[RoutePath]:
        """BIRD's paths for exactly `prefix` ("192.0.2.40/32", "2001:db8::28/128"), one per node."""
        net = ipaddress.ip_network(prefix)  # as BIRD prints it
        table = f"master{net.version}"
        # birdc fails with "Network not found" for a prefix it has no route for: that is no path.
        res = self._birdc(f"show route {net} table {table} all", check=False)
        if res.returncode != 0 and "Network not found" not in res.stdout:
            raise RuntimeError(f"birdc show route {net} failed: {res.stdout}{res.stderr}")
        return parse_routes(res.stdout).get(str(net), [])

    def sessions(self) -> dict[str, str]:
        """Node name -> BGP state ("Established", "Active", "Connect", ...)."""
        return {name: p.get("bgp_state", p["state"])
                for name, p in parse_protocols(self.birdc("show protocols all")).items() if p["proto"] == "BGP"}

    def bfd_sessions(self) -> dict[str, str]:
        """Peer address -> BFD state ("Up", ...)."""
        return parse_bfd_sessions(self.birdc("show bfd sessions"))

    def kernel_next_hops(self, prefix: str) -> list[str]:
        """The next hops of the router's kernel route for `prefix` (several: a multipath route)."""
        family = "-6" if ":" in prefix else "-4"
        res = self.lab.run(self.host.netns, ["ip", "-j", family, "route", "show", "exact", prefix])
        return multipath_next_hops(json.loads(res.stdout or "[]"))

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join((self.dir / "bird.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
