"""A LAN made of network namespaces: a bridge namespace as the switch, node namespaces with
an eth0 each, a client namespace, and a veth from the host into the bridge so that node
namespaces reach a control plane running on the host. Optionally a router namespace on the LAN
with a second leg on an outside network, where a remote client lives (for BGP mode).

Addresses come only from documentation ranges. Four labs can run at once: each takes a
slot, a /26 of 192.0.2.0/24 and a /64 of 2001:db8::/32 (and, for the outside network, a /26 of
198.51.100.0/24 and a /64 of 2001:db8:1::/48). Labs left behind by a run that died are torn
down by the next one before it builds anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from leifur_dev import runtime

SLOTS = 4
PREFIX = "lf"  # every namespace and host link of ours starts with this
_REGISTRY = "labs"
_STATE = "lab-state"  # per-lab directories of the daemons run in it (FRR, BIRD)
MAX_NODES = 40
SERVER_PORT = 8080  # where serve() listens on each node; the Service port is DNATed to it


@dataclass(frozen=True)
class Host:
    """One namespace on the LAN (a node, the client or the router), or the remote client."""

    name: str  # node1, node2, ..., client, router, remote
    netns: str
    ip4: str
    ip6: str
    mac: str
    backplane4: str = ""  # the node's address on the lab's second network, if it has one


def slot_addresses(slot: int) -> dict[str, str]:
    base = 64 * slot
    return {
        "subnet4": f"192.0.2.{base}/26",
        "host4": f"192.0.2.{base + 1}",
        "subnet6": f"2001:db8:0:{slot}::/64",
        "backplane4": f"203.0.113.{base}/26",
        # Inside the control plane's ClusterIP range too, which no lab routes (there is no kube-proxy).
        "outside4": f"198.51.100.{base}/26",
        "outside6": f"2001:db8:1:{slot}::/64",
    }


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return res


def list_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _kill_netns_processes(netns: str) -> None:
    """SIGKILL every process inside a namespace: nothing of ours may outlive the lab."""
    for _ in range(20):
        pids = netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def state_dir(lab_id: str) -> Path:
    """Where the daemons of lab `lab_id` keep their files: under /run (world-traversable, so FRR's
    daemons reach it as the frr user), removed with the lab."""
    return runtime.runtime_dir(_STATE) / lab_id


def _destroy(namespaces: list[str], host_link: str | None, lab_id: str | None = None) -> None:
    existing = set(list_netns())
    for ns in namespaces:
        if ns in existing:
            _kill_netns_processes(ns)
            _ip("netns", "del", ns, check=False)
    if host_link:
        _ip("link", "del", host_link, check=False)
    if lab_id:
        shutil.rmtree(state_dir(lab_id), ignore_errors=True)


def _teardown_record(name: str, record: dict) -> None:
    _destroy(record.get("namespaces", []), record.get("host_link"), name)


def reap_orphans() -> list[str]:
    return runtime.Registry(_REGISTRY).reap_orphans(_teardown_record)


@dataclass
class Lab:
    """A LAN of `node_count` node namespaces, a client and a switch. Use as a context manager.

    `backplane`: the nodes also get an eth1 on a second switch, with no client on it (203.0.113.0/24),
    like a cluster whose nodes talk over a network of their own beside the LAN that clients use.

    `router`: a router namespace on the LAN (eth0) and on an outside network (eth1, 198.51.100.0/24
    and 2001:db8:1::/48) where the remote client lives, routed by it (its default route); the nodes
    route the outside network through it. It forwards with a layer-4 multipath hash, so that a
    route with several next hops spreads one client's connections. What runs in it (BIRD, see
    leifur_dev.bird) is the test's.
    """

    node_count: int = 2
    backplane: bool = False
    router: bool = False
    slot: int = -1
    id: str = field(default_factory=lambda: secrets.token_hex(2))
    nodes: list[Host] = field(default_factory=list)
    client: Host | None = None
    router_host: Host | None = None  # on the LAN; its outside addresses are router_outside4/6
    remote: Host | None = None  # the client on the outside network
    _lock: object = None
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _serving: set[str] = field(default_factory=set)  # nodes whose serve() server runs

    # -- names --------------------------------------------------------------------------

    @property
    def bridge_netns(self) -> str:
        return f"{PREFIX}-{self.id}-sw"

    @property
    def host_link(self) -> str:
        return f"{PREFIX}{self.id}host"

    @property
    def host_ip(self) -> str:
        """The host's address on the LAN, where node namespaces reach the control plane."""
        return slot_addresses(self.slot)["host4"]

    @property
    def namespaces(self) -> list[str]:
        names = [self.bridge_netns] + [h.netns for h in self.nodes]
        return names + [h.netns for h in (self.client, self.router_host, self.remote) if h]

    @property
    def router_outside4(self) -> str:
        return f"198.51.100.{64 * self.slot + 61}"

    @property
    def router_outside6(self) -> str:
        return f"2001:db8:1:{self.slot}::1"

    @property
    def state_dir(self) -> Path:
        """This lab's directory for daemons' files (made on first use, removed at teardown)."""
        path = state_dir(self.id)
        path.mkdir(mode=0o755, exist_ok=True)
        return path

    def lan_ip(self, offset: int, version: int = 4) -> str:
        """An address of the lab's subnet that no host uses (offsets 30..59 are free)."""
        if version == 4:
            return f"192.0.2.{64 * self.slot + offset}"
        return f"2001:db8:0:{self.slot}::{offset:x}"

    def _host(self, name: str, index: int) -> Host:
        base = 64 * self.slot
        if name == "client":
            ip4, ip6, mac = f"192.0.2.{base + 62}", f"2001:db8:0:{self.slot}::100", "01:00"
        elif name == "router":
            ip4, ip6, mac = f"192.0.2.{base + 2}", f"2001:db8:0:{self.slot}::2", "02:00"
        elif name == "remote":
            ip4, ip6, mac = f"198.51.100.{base + 62}", f"2001:db8:1:{self.slot}::100", "03:00"
        else:
            ip4, ip6, mac = f"192.0.2.{base + 10 + index}", f"2001:db8:0:{self.slot}::{10 + index}", f"00:{index:02x}"
        backplane = f"203.0.113.{base + 10 + index}" if self.backplane and name != "client" else ""
        return Host(name, f"{PREFIX}-{self.id}-{name}", ip4, ip6, f"02:00:00:{self.slot:02x}:{mac}", backplane)

    # -- building -----------------------------------------------------------------------

    def _take_slot(self) -> None:
        for slot in range(SLOTS):
            f = open(runtime.runtime_dir(_REGISTRY) / f"slot-{slot}.lock", "w")  # noqa: SIM115 - held for the lab's life
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self.slot, self._lock = slot, f
            return
        raise RuntimeError(f"all {SLOTS} lab slots are in use; stop another lab first")

    def _register(self) -> None:
        runtime.Registry(_REGISTRY).write(self.id, {
            **runtime.owner_record(), "slot": self.slot,
            "namespaces": self.namespaces, "host_link": self.host_link,
        })

    def _attach(self, host_side: str, inside: str, netns: str, bridge: str = "br0") -> None:
        """A veth from the switch (port `host_side`) to `inside`@netns."""
        sw = self.bridge_netns
        _ip("link", "add", host_side, "netns", sw, "type", "veth", "peer", "name", inside, "netns", netns)
        _ip("link", "set", host_side, "master", bridge, "up", netns=sw)

    def set_lan_port(self, host: Host, up: bool) -> None:
        """Set the switch port of `host`'s eth0 up or down: down, `host` sees no carrier on the LAN,
        as with a pulled cable or a dead switch port."""
        _ip("link", "set", host.name, "up" if up else "down", netns=self.bridge_netns)

    def build(self) -> Lab:
        if not 1 <= self.node_count <= MAX_NODES:
            raise ValueError(f"node_count must be 1..{MAX_NODES}")
        reap_orphans()
        self._take_slot()
        self.nodes = [self._host(f"node{i}", i) for i in range(1, self.node_count + 1)]
        self.client = self._host("client", 0)
        if self.router:
            self.router_host, self.remote = self._host("router", 0), self._host("remote", 0)
        # Register before creating anything, so a crash mid-build leaves nothing unrecorded.
        self._register()
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def _build(self) -> None:
        sw = self.bridge_netns
        for ns in self.namespaces:
            _ip("netns", "add", ns)
            _ip("link", "set", "lo", "up", netns=ns)
        _ip("link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0",
            "mcast_snooping", "0", netns=sw)
        _ip("link", "set", "br0", "up", netns=sw)
        addrs = slot_addresses(self.slot)
        plen4 = addrs["subnet4"].split("/")[1]
        assert self.client is not None
        for host in [*self.nodes, self.client, *([self.router_host] if self.router_host else [])]:
            self._attach(host.name, "eth0", host.netns)
            self._address(host, "eth0", plen4, "64")
        if self.backplane:
            _ip("link", "add", "br1", "type", "bridge", "stp_state", "0", "forward_delay", "0", netns=sw)
            _ip("link", "set", "br1", "up", netns=sw)
            plen = addrs["backplane4"].split("/")[1]
            for host in self.nodes:
                self._attach(f"{host.name}-bp", "eth1", host.netns, bridge="br1")
                _ip("addr", "add", f"{host.backplane4}/{plen}", "dev", "eth1", netns=host.netns)
                _ip("link", "set", "eth1", "up", netns=host.netns)
        if self.router:
            self._build_router()
        # The host's leg: a veth whose far end is a switch port.
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", "host", "netns", sw)
        _ip("link", "set", "host", "master", "br0", "up", netns=sw)
        _ip("addr", "add", f"{addrs['host4']}/{plen4}", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")

    @staticmethod
    def _address(host: Host, dev: str, plen4: str, plen6: str) -> None:
        _ip("link", "set", dev, "address", host.mac, netns=host.netns)
        _ip("addr", "add", f"{host.ip4}/{plen4}", "dev", dev, netns=host.netns)
        _ip("addr", "add", f"{host.ip6}/{plen6}", "dev", dev, "nodad", netns=host.netns)
        _ip("link", "set", dev, "up", netns=host.netns)

    def _build_router(self) -> None:
        """The outside network is a veth pair: router eth1 <-> remote eth0."""
        router, remote = self.router_host, self.remote
        assert router is not None and remote is not None
        addrs = slot_addresses(self.slot)
        out4, out6 = addrs["outside4"], addrs["outside6"]
        _ip("link", "add", "eth1", "netns", router.netns, "type", "veth", "peer", "name", "eth0", "netns", remote.netns)
        self._address(remote, "eth0", out4.split("/")[1], "64")
        _ip("addr", "add", f"{self.router_outside4}/{out4.split('/')[1]}", "dev", "eth1", netns=router.netns)
        _ip("addr", "add", f"{self.router_outside6}/64", "dev", "eth1", "nodad", netns=router.netns)
        _ip("link", "set", "eth1", "up", netns=router.netns)
        _ip("route", "add", "default", "via", self.router_outside4, netns=remote.netns)
        _ip("-6", "route", "add", "default", "via", self.router_outside6, netns=remote.netns)
        for node in self.nodes:
            _ip("route", "add", out4, "via", router.ip4, netns=node.netns)
            _ip("-6", "route", "add", out6, "via", router.ip6, netns=node.netns)
        # Layer-4 hash: one client's connections to one Service IP spread over a multipath route.
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                    "net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"):
            self.run(router.netns, ["sysctl", "-q", "-w", key])

    # -- using --------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        for h in [*self.nodes, *(h for h in (self.client, self.router_host, self.remote) if h)]:
            if h.name == name:
                return h
        raise KeyError(name)

    def run(self, netns: str, argv: list[str], check: bool = True, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        """Run a command inside a namespace of this lab and wait for it."""
        return subprocess.run(["ip", "netns", "exec", netns, *argv], check=check, timeout=timeout,
                              capture_output=True, text=True, **kw)

    def popen(self, netns: str | None, argv: list[str], **kw) -> subprocess.Popen:
        """Start a long-running process inside a namespace; teardown kills it. netns None: in this
        process's namespaces, for a program that joins one itself (podman run --network ns:...)."""
        prefix = ["ip", "netns", "exec", netns] if netns is not None else []
        proc = subprocess.Popen([*prefix, *argv], start_new_session=True,
                                preexec_fn=runtime.die_with_parent, **kw)
        self._procs.append(proc)
        return proc

    def serve(self, ip: str, port: int = 80, nodes: list[Host] | None = None) -> None:
        """On every node (or `nodes`): a TCP server answering its node's name, and kube-proxy's DNAT of
        ip:port to it, so that a node serves a Service IP it does not hold (IPv4 or IPv6)."""
        # One dual-stack server per node, started with its first Service.
        server = textwrap.dedent(f"""
            import socket, sys
            s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", {SERVER_PORT})); s.listen(64)
            while True:
                c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()
        """)
        v6 = ":" in ip
        for host in self.nodes if nodes is None else nodes:
            if host.name not in self._serving:
                self.popen(host.netns, [sys.executable, "-c", server, host.name])
                self._serving.add(host.name)
            family, match, to = ("ip6", "ip6", f"[{host.ip6}]") if v6 else ("ip", "ip", host.ip4)
            rules = (f"table {family} leifurtest {{\n chain pre {{\n  type nat hook prerouting priority -100\n"
                     f"  {match} daddr {ip} tcp dport {port} dnat to {to}:{SERVER_PORT}\n }}\n}}\n")
            self.run(host.netns, ["nft", "-f", "-"], input=rules)

    def connect(self, ip: str, port: int = 80, timeout: float = 2, source: Host | None = None) -> str | None:
        """From the client namespace (or `source`'s): the name of the node that served a TCP
        connection, or None."""
        code = ("import socket,sys\n"
                "try:\n s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[3]))\n"
                " print(s.recv(100).decode())\nexcept OSError as e:\n print('')\n")
        source = source or self.client
        assert source is not None
        res = self.run(source.netns, [sys.executable, "-c", code, ip, str(port), str(timeout)],
                       check=False, timeout=timeout + 10)
        return res.stdout.strip() or None

    def teardown(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        if self.slot >= 0:
            _destroy(self.namespaces, self.host_link, self.id)
            runtime.Registry(_REGISTRY).remove(self.id)
        if self._lock is not None:
            self._lock.close()  # type: ignore[attr-defined]
            self._lock = None

    def __enter__(self) -> Lab:
        return self.build()

    def __exit__(self, *exc) -> None:
        self.teardown()


def leftovers() -> dict[str, list[str]]:
    """Namespaces and host links of ours that exist right now (for cleanup checks)."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    host_links = [
        line.split(":")[1].strip().split("@")[0]
        for line in links.splitlines()
        if line.split(":")[1].strip().startswith(PREFIX)
    ]
    return {
        "namespaces": [ns for ns in list_netns() if ns.startswith(f"{PREFIX}-")],
        "links": host_links,
    }
