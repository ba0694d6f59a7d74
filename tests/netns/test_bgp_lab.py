"""The BGP lab works on its own: FRR in node namespaces, configured by hand, peers with BIRD in
the router namespace; the router installs what it learns as multipath kernel routes and forwards
the remote client's connections to the nodes. BGP mode's end-to-end tests stand on this."""

from __future__ import annotations

import ipaddress
import signal

import pytest

from leifur_dev import bird, frr, netlab, runtime
from leifur_dev.cluster import wait_for

pytestmark = [pytest.mark.netns]

# Generous: a loaded 2-core machine; a session comes up in seconds when all is well.
SETTLE = 90


def node_config(lab: netlab.Lab, host: netlab.Host, prefixes: list[str], *, asn: int = bird.NODE_ASN,
                router_asn: int = bird.ROUTER_ASN, bfd: bool = False, password: str = "", peer: str = "",
                local_pref: int = 0, community: str = "", large_community: str = "") -> str:
    """A hand-written FRR configuration as the agent's would be: a session to the router, nothing
    accepted, `prefixes` advertised with the given attributes."""
    router = lab.router_host
    assert router is not None
    peer = peer or router.ip4
    sets = [f" set local-preference {local_pref}"] if local_pref else []
    sets += [f" set community {community}"] if community else []
    sets += [f" set large-community {large_community}"] if large_community else []
    families = []
    for family, version in (("ipv4", 4), ("ipv6", 6)):
        nets = [p for p in prefixes if (":" in p) == (version == 6)]
        families.append("\n".join([
            f" address-family {family} unicast",
            *(f"  network {p}" for p in nets),
            *([f"  neighbor {peer} activate"] if version == 6 else []),
            f"  neighbor {peer} route-map DENY in",
            f"  neighbor {peer} route-map OUT out",
            " exit-address-family"]))
    return "\n".join([
        "frr defaults traditional",
        f"hostname {host.name}",
        "log stdout informational",
        "service integrated-vtysh-config",
        "route-map DENY deny 10",
        "exit",
        "route-map OUT permit 10",
        *sets,
        "exit",
        f"router bgp {asn}",
        f" bgp router-id {host.ip4}",
        " no bgp network import-check",
        f" neighbor {peer} remote-as {router_asn}",
        *([f" neighbor {peer} bfd profile lab"] if bfd else []),
        *([f" neighbor {peer} password {password}"] if password else []),
        *families,
        "exit",
        *(["bfd", " profile lab", "  receive-interval 100", "  transmit-interval 100", " exit", "exit"]
          if bfd else []),
    ]) + "\n"


def start_nodes(lab: netlab.Lab, prefixes: list[str], **kw) -> list[frr.FRR]:
    return [frr.FRR(lab, host).start(node_config(lab, host, prefixes, **kw)) for host in lab.nodes]


def all_established(router: bird.Router, nodes: list[frr.FRR]) -> bool:
    peer = canon(router.local_address)
    return (set(router.sessions().values()) == {"Established"} and len(router.sessions()) == len(nodes)
            and all({canon(a): s for a, s in n.sessions().items()}.get(peer) == "Established" for n in nodes))


def canon(ip: str) -> str:
    """As BIRD and ip print an address (the lab spells IPv6 ones uncompressed)."""
    return ipaddress.ip_address(ip).compressed


def served_by_several(lab: netlab.Lab, ip: str, tries: int = 20) -> set[str]:
    """The nodes that served the remote client's connections to `ip`, if more than one did."""
    nodes = {lab.connect(ip, source=lab.remote) or "" for _ in range(tries)} - {""}
    return nodes if len(nodes) > 1 else set()


@pytest.mark.parametrize("router_lab", [3], indirect=True)
def test_service_routes_from_every_node_become_one_multipath_route_and_spread_the_clients_connections(router_lab):
    lab = router_lab
    ip4, ip6 = lab.lan_ip(40), lab.lan_ip(40, 6)
    prefixes = [f"{ip4}/32", f"{ip6}/128"]
    nodes = start_nodes(lab, prefixes, bfd=True, password="lab-secret")
    router = bird.Router(lab, bird.RouterConfig(bfd=bird.BFDTimers(), password="lab-secret")).start()
    wait_for(lambda: all_established(router, nodes), SETTLE, interval=0.5, what="every session Established")

    node_ips4 = sorted(h.ip4 for h in lab.nodes)
    node_ips6 = sorted(canon(h.ip6) for h in lab.nodes)
    for prefix, want in ((prefixes[0], node_ips4), (prefixes[1], node_ips6)):
        # BIRD: one path per node, each via that node.
        paths = wait_for(lambda p=prefix: len(router.paths(p)) == len(lab.nodes) and router.paths(p), SETTLE,
                         interval=0.5, what=f"a path per node for {prefix}")
        assert sorted(p.protocol for p in paths) == [h.name for h in lab.nodes]
        assert sorted(h for p in paths for h in p.next_hops) == want
        # The kernel: one route with a next hop per node.
        wait_for(lambda p=prefix, w=want: router.kernel_next_hops(p) == w, SETTLE, interval=0.5,
                 what=f"a multipath kernel route for {prefix}")

    # The router exports nothing to the nodes.
    for node in lab.nodes:
        assert bird.parse_routes(router.birdc(f"show route export {node.name}")) == {}

    # BFD is Up on both sides.
    wait_for(lambda: sorted(router.bfd_sessions().items()) == [(ip, "Up") for ip in node_ips4], SETTLE,
             interval=0.5, what="BFD Up at the router")
    for node in nodes:
        wait_for(lambda n=node: n.bfd_peers() == {lab.router_host.ip4: "up"}, SETTLE, interval=0.5,
                 what=f"BFD up at {node.host.name}")

    # The remote client's connections reach more than one node, over each family.
    lab.serve(ip4)
    lab.serve(ip6)
    for ip in (ip4, ip6):
        reached = wait_for(lambda i=ip: served_by_several(lab, i), SETTLE, interval=1,
                           what=f"connections to {ip} served by several nodes")
        assert reached <= {h.name for h in lab.nodes}


@pytest.mark.parametrize("router_lab", [2], indirect=True)
def test_communities_and_local_preference_set_by_frr_are_visible_at_the_router_over_ibgp(router_lab):
    lab = router_lab
    prefixes = [f"{lab.lan_ip(41)}/32", f"{lab.lan_ip(41, 6)}/128"]
    asn = 64999  # iBGP: the router honours local preference only from its own AS
    nodes = start_nodes(lab, prefixes, asn=asn, router_asn=asn, local_pref=250, community="64999:17",
                        large_community="64999:1:2")
    router = bird.Router(lab, bird.RouterConfig(router_asn=asn, node_asn=asn, graceful_restart=True,
                                                hold_time=9)).start()
    wait_for(lambda: all_established(router, nodes), SETTLE, interval=0.5, what="every session Established")
    for prefix in prefixes:
        paths = wait_for(lambda p=prefix: len(router.paths(p)) == len(lab.nodes) and router.paths(p), SETTLE,
                         interval=0.5, what=f"a path per node for {prefix}")
        for path in paths:
            assert path.local_pref == 250
            assert path.communities == {"64999:17"}
            assert path.large_communities == {"64999:1:2"}
            assert path.attributes["Type"].startswith("BGP")
        assert sorted(router.kernel_next_hops(prefix)) == sorted(
            canon(h.ip6) if ":" in prefix else h.ip4 for h in lab.nodes)
    # The hold time negotiated is the router's 9 s (FRR offers 180 s; the lower one wins).
    held = router.birdc("show protocols all node1")
    assert "/9" in next(line for line in held.splitlines() if "Hold timer" in line), held


@pytest.mark.parametrize("router_lab", [2], indirect=True)
def test_the_router_restarted_and_a_node_cut_off_converge_back(router_lab):
    lab = router_lab
    prefix = f"{lab.lan_ip(42)}/32"
    nodes = start_nodes(lab, [prefix], bfd=True)
    router = bird.Router(lab, bird.RouterConfig(bfd=bird.BFDTimers())).start()
    both = sorted(h.ip4 for h in lab.nodes)
    wait_for(lambda: router.kernel_next_hops(prefix) == both, SETTLE, interval=0.5, what="both next hops")

    # A crashed router: killed by its PID, started again; the sessions and the route come back.
    first = router.pid
    router.restart(signal.SIGKILL)
    assert router.pid != first
    wait_for(lambda: all_established(router, nodes), SETTLE, interval=0.5, what="sessions back after a restart")
    # Learnt again (the kernel kept the crashed BIRD's route; the new one took it over).
    wait_for(lambda: len(router.paths(prefix)) == 2, SETTLE, interval=0.5, what="both paths learnt again")
    wait_for(lambda: router.kernel_next_hops(prefix) == both, SETTLE, interval=0.5, what="both next hops again")

    # A node's cable pulled: BFD takes its path away, the other node keeps the route.
    cut = lab.nodes[0]
    lab.set_lan_port(cut, up=False)
    wait_for(lambda: router.kernel_next_hops(prefix) == [lab.nodes[1].ip4], SETTLE, interval=0.2,
             what="the cut node's next hop gone")
    assert router.sessions()["node1"] != "Established"
    lab.set_lan_port(cut, up=True)
    wait_for(lambda: router.kernel_next_hops(prefix) == both, SETTLE, interval=0.5, what="the node back")


@pytest.mark.parametrize("router_lab", [1], indirect=True)
def test_frr_reloads_a_changed_config_and_ends_by_pid(router_lab):
    lab = router_lab
    first, second = f"{lab.lan_ip(43)}/32", f"{lab.lan_ip(44)}/32"
    [node] = start_nodes(lab, [first])
    router = bird.Router(lab).start()
    wait_for(lambda: router.paths(first), SETTLE, interval=0.5, what=f"{first} at the router")

    # Changed in place by frr-reload.py: the new prefix comes, the old one goes, the session stays.
    pids = node.pids()
    changed = node_config(lab, node.host, [second])
    node.reload(changed)
    wait_for(lambda: router.paths(second) and not router.paths(first), SETTLE, interval=0.5,
             what="the reloaded config's prefix only")
    # The daemons stayed, and frr-reload.py left the file as written (it writes back only elsewhere).
    assert node.pids() == pids and node.config_path.read_text() == changed
    assert f"network {second}" in node.vtysh("show running-config")

    # Ended by PID: the daemons are gone and the router loses the session and the route.
    node.stop()
    assert not any(runtime.pid_alive(pid) for pid in pids.values())
    wait_for(lambda: router.sessions()["node1"] != "Established" and not router.paths(second), SETTLE,
             interval=0.5, what="the session and route gone")



@pytest.mark.parametrize("router_lab", [2], indirect=True)
def test_ipv6_sessions_carry_ipv6_service_routes(router_lab):
    lab = router_lab
    prefix = f"{lab.lan_ip(45, 6)}/128"
    assert lab.router_host is not None
    nodes = start_nodes(lab, [prefix], peer=lab.router_host.ip6)
    router = bird.Router(lab, bird.RouterConfig(session_family=6)).start()
    wait_for(lambda: all_established(router, nodes), SETTLE, interval=0.5, what="every IPv6 session Established")
    protocols = bird.parse_protocols(router.birdc("show protocols all"))
    assert sorted(canon(p["neighbor"]) for p in protocols.values() if p["proto"] == "BGP") == sorted(
        canon(h.ip6) for h in lab.nodes)
    want = sorted(canon(h.ip6) for h in lab.nodes)
    wait_for(lambda: router.kernel_next_hops(prefix) == want, SETTLE, interval=0.5, what=f"ECMP for {prefix}")
    lab.serve(lab.lan_ip(45, 6))
    wait_for(lambda: served_by_several(lab, lab.lan_ip(45, 6)), SETTLE, interval=1, what="several nodes serving")
