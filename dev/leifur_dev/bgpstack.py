"""BGP mode on one machine: a `Stack` in a router lab, FRR in every node namespace driven by that
node's real agent (--bgp-frr-config, --bgp-vty-dir), BIRD 2 as the router with one neighbour per
node, and the remote client behind it.

Used by tests/netns/test_bgp_mode.py and the BGP benchmarks. The test creates its pools,
BGPPeers, BGPAdvertisements and BFDProfiles (`peer`, `advertisement`, `bfd_profile`), then
`start()`; it reads what the router learnt (`paths`, `advertisers`, `next_hops`), what the
remote client reaches (`reached`, `probe` over UDP through the router) and what the nodes report
(`record`, `leifurctl`). Every daemon is ended by its PID in `stop()`; the lab's teardown kills
whatever is left in its namespaces, so a failed test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import subprocess
import sys

from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur_dev import bird, frr, netlab
from leifur_dev.cluster import wait_for
from leifur_dev.stack import Stack

UDP_PORT = 7  # the Service port the flow probe sends to (echo); DNATed to ECHO_PORT on each node
ECHO_PORT = netlab.SERVER_PORT + 1
# Generous: a loaded 2-core machine; a session comes up in seconds when all is well.
SETTLE = 90.0

_KINDS = {names.BGP_PEER: names.BGPPEERS, names.BGP_ADVERTISEMENT: names.BGPADVERTISEMENTS,
          names.BFD_PROFILE: names.BFDPROFILES}


def host_prefix(ip: str) -> str:
    """A Service IP as the router names its route: "192.0.2.40/32", "2001:db8::28/128"."""
    return str(ipaddress.ip_network(ip))


def base_config(host: netlab.Host) -> str:
    """What a node's FRR starts with before its agent writes the BGP part (the agent keeps it)."""
    return (f"frr defaults traditional\nhostname {host.name}\nlog stdout informational\n"
            "service integrated-vtysh-config\n")


class BGPStack:
    """A Stack whose lab has a router (netlab.Lab(router=True)), in BGP mode."""

    def __init__(self, stack: Stack, router: bird.RouterConfig | None = None) -> None:
        assert stack.lab.router_host is not None, "BGP mode needs a lab with a router"
        self.stack = stack
        self.lab = stack.lab
        self.router = bird.Router(self.lab, router)
        self.frr: dict[str, frr.FRR] = {}
        self.objects: list[tuple[str, str]] = []  # (kind, name) of the BGP objects created
        self._udp_served: set[str] = set()

    @property
    def router_ip(self) -> str:
        assert self.lab.router_host is not None
        return self.lab.router_host.ip4

    # -- bring-up ---------------------------------------------------------------------------------

    def start(self, agents: bool = True) -> BGPStack:
        """BIRD, the controller, then on every node FRR and its agent (each ready before return)."""
        self.router.start()
        self.stack.start(agents=False)
        for host in self.lab.nodes:
            self.start_frr(host)
        if agents:
            for host in self.lab.nodes:
                self.start_agent(host)
            for host in self.lab.nodes:
                self.stack.agents[host.name].wait_ready()
        return self

    def start_frr(self, host: netlab.Host) -> frr.FRR:
        self.frr[host.name] = frr.FRR(self.lab, host).start(base_config(host))
        return self.frr[host.name]

    def start_agent(self, host: netlab.Host, *extra: str, reuse_credentials: bool = False):
        """The node's agent in BGP mode, driving the node's FRR."""
        directory = frr.directory(self.lab, host)
        return self.stack.start_agent(host, "--bgp-frr-config", str(directory / "frr.conf"),
                                      "--bgp-vty-dir", str(directory), *extra, reuse_credentials=reuse_credentials)

    # -- objects ----------------------------------------------------------------------------------

    def _create(self, kind: str, name: str, spec: dict) -> str:
        full = f"{self.lab.id}-{name}"
        body = {"apiVersion": names.API_VERSION, "kind": kind, "metadata": {"name": full}, "spec": spec}
        self.stack.cluster.custom.create_cluster_custom_object(names.GROUP, names.VERSION, _KINDS[kind], body)
        self.objects.append((kind, full))
        return full

    def peer(self, name: str = "router", **spec) -> str:
        """A BGPPeer for the lab's router, as its BIRD expects (its ASNs, its address); `spec` adds or overrides."""
        config = self.router.config
        return self._create(names.BGP_PEER, name, {"myASN": config.node_asn, "peerASN": config.router_asn,
                                                   "peerAddress": self.router_ip, **spec})

    def advertisement(self, name: str, **spec) -> str:
        return self._create(names.BGP_ADVERTISEMENT, name, spec)

    def bfd_profile(self, name: str, **spec) -> str:
        return self._create(names.BFD_PROFILE, name, spec)

    def get(self, kind: str, name: str) -> dict:
        return self.stack.cluster.custom.get_cluster_custom_object(names.GROUP, names.VERSION, _KINDS[kind], name)

    def patch(self, kind: str, name: str, spec: dict) -> dict:
        return self.stack.cluster.custom.patch_cluster_custom_object(
            names.GROUP, names.VERSION, _KINDS[kind], name, {"spec": spec},
            _content_type="application/merge-patch+json")

    def condition(self, kind: str, name: str, type_: str) -> dict | None:
        conds = (self.get(kind, name).get("status") or {}).get("conditions") or []
        return next((c for c in conds if c.get("type") == type_), None)

    def record(self, host: netlab.Host) -> dict:
        """The node's L2NodeStatus ({} before its agent wrote one)."""
        try:
            return self.stack.cluster.custom.get_cluster_custom_object(
                names.GROUP, names.VERSION, names.L2NODESTATUSES, self.stack.node_name(host))
        except ApiException as e:
            if e.status == 404:
                return {}
            raise

    def sessions(self, host: netlab.Host) -> list[dict]:
        """status.bgp.sessions of the node's record."""
        return ((self.record(host).get("status") or {}).get("bgp") or {}).get("sessions") or []

    # -- the router's view ------------------------------------------------------------------------

    def paths(self, ip: str) -> list[bird.RoutePath]:
        return self.router.paths(host_prefix(ip))

    def advertisers(self, ip: str) -> set[str]:
        """The lab names of the nodes whose path to `ip` BIRD holds."""
        return {p.protocol for p in self.paths(ip)}

    def next_hops(self, ip: str) -> set[str]:
        """The next hops of the router's kernel route to `ip` (compressed addresses)."""
        return {ipaddress.ip_address(h).compressed for h in self.router.kernel_next_hops(host_prefix(ip))}

    def node_hops(self, ip: str, hosts: list[netlab.Host]) -> set[str]:
        """What next_hops(ip) is when exactly `hosts` advertise it."""
        return {ipaddress.ip_address(h.ip6 if ":" in ip else h.ip4).compressed for h in hosts}

    def established(self) -> bool:
        """Every node's session Established, at the router."""
        states = self.router.sessions()
        return len(states) == len(self.lab.nodes) and set(states.values()) == {"Established"}

    def wait_advertised(self, ip: str, hosts: list[netlab.Host], timeout: float = SETTLE) -> None:
        """Until exactly `hosts` advertise `ip`: BIRD has a path from each, the kernel a next hop to each."""
        want = {h.name for h in hosts}
        wait_for(lambda: self.advertisers(ip) == want and self.next_hops(ip) == self.node_hops(ip, hosts), timeout,
                 interval=0.5, what=f"{ip} advertised by exactly {sorted(want)} (BIRD: {sorted(self.advertisers(ip))})")

    # -- the remote client ------------------------------------------------------------------------

    def serve(self, ip: str) -> None:
        """On every node: the TCP server (`reached`) and the UDP echo server (`probe`) behind `ip`."""
        self.lab.serve(ip)
        family = "ip6" if ":" in ip else "ip"
        for host in self.lab.nodes:
            if host.name not in self._udp_served:
                self.lab.popen(host.netns, [sys.executable, "-m", "leifur_dev.flowprobe", "--port", str(ECHO_PORT),
                                            "--serve", host.name])
                self._udp_served.add(host.name)
            to = f"[{host.ip6}]" if family == "ip6" else host.ip4
            rules = (f"table {family} leifurtest-udp {{\n chain pre {{\n  type nat hook prerouting priority -100\n"
                     f"  {family} daddr {ip} udp dport {UDP_PORT} dnat to {to}:{ECHO_PORT}\n }}\n}}\n")
            self.lab.run(host.netns, ["nft", "-f", "-"], input=rules)

    def reached(self, ip: str, tries: int = 20) -> set[str]:
        """The nodes that served the remote client's TCP connections to `ip` over `tries` attempts."""
        return {self.lab.connect(ip, source=self.lab.remote) or "" for _ in range(tries)} - {""}

    def probe(self, ip: str, duration: float, interval: float = 0.01) -> subprocess.Popen:
        """The flow probe from the remote client (leifur_dev.flowprobe); read it with
        Stack.probe_first_answer, Stack.probe_result and Stack.stop_probe."""
        assert self.lab.remote is not None
        return self.lab.popen(self.lab.remote.netns, [
            sys.executable, "-m", "leifur_dev.flowprobe", "--ip", ip, "--port", str(UDP_PORT),
            "--interval", str(interval), "--duration", str(duration)], stdout=subprocess.PIPE, text=True)

    # -- faults -----------------------------------------------------------------------------------

    def crash(self, host: netlab.Host) -> None:
        """`host` dies: its network goes silent first (nothing in or out of eth0, as with a machine
        powered off: no FIN closes its sessions), then its agent and FRR are killed (SIGKILL)."""
        rules = ("table netdev leifurtest-dead {\n chain in {\n  type filter hook ingress device eth0 priority -500\n"
                 "  drop\n }\n}\ntable inet leifurtest-dead {\n chain out {\n"
                 "  type filter hook postrouting priority 500\n  oifname eth0 drop\n }\n}\n")
        self.lab.run(host.netns, ["nft", "-f", "-"], input=rules)
        self.stack.agents[host.name].signal(signal.SIGKILL)
        self.frr[host.name].stop(signal.SIGKILL)

    # -- leifurctl --------------------------------------------------------------------------------

    def leifurctl(self, *args: str, ok: tuple[int, ...] = (0,)) -> str:
        res = subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", *args, "--kubeconfig",
                              str(self.stack.cp.kubeconfig)], capture_output=True, text=True, timeout=60)
        assert res.returncode in ok, f"leifurctl {' '.join(args)} exited {res.returncode}: {res.stdout}{res.stderr}"
        return res.stdout

    # -- teardown ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """The BGP objects deleted, FRR and BIRD ended by PID (call after Stack.stop: the agents
        withdraw through their FRR on SIGTERM)."""
        for kind, name in reversed(self.objects):
            with contextlib.suppress(ApiException):
                self.stack.cluster.custom.delete_cluster_custom_object(names.GROUP, names.VERSION, _KINDS[kind], name)
        for instance in self.frr.values():
            instance.stop()
        self.router.stop(signal.SIGTERM)



def daemon_log_tails(lab: netlab.Lab, lines: int = 30) -> str:
    """The ends of the logs of the daemons run in `lab` (FRR per node, BIRD), for a failed test's output."""
    out = []
    for log in sorted(lab.state_dir.glob("*/*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.parent.name}/{log.name} ---\n" + "\n".join(tail))
    return "\n".join(out)

