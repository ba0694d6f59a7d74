"""BGP mode end to end: the real control plane and controller, a leifur-agent and an FRR instance
in every node namespace (the agent drives FRR), BIRD 2 as the router, and a client behind the
router on its outside network. What the router learns, installs and forwards is asserted, never
how fast (the blackouts belong to tests/benchmarks)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from leifur.model import names
from leifur_dev.bgpstack import SETTLE, BGPStack
from leifur_dev.cluster import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]


def setup(bgp: BGPStack, v6: bool = False, **ad) -> tuple[str, str]:
    """A pool of free LAN addresses (and IPv6 ones with `v6`), a BGPPeer for the router, an
    advertisement of the pool to it, everything started; the pool and the test's namespace."""
    addresses = [f"{bgp.stack.lan_ip(40)}-{bgp.stack.lan_ip(49)}"]
    if v6:
        addresses.append(f"{bgp.stack.lan_ip(0x40, 6)}-{bgp.stack.lan_ip(0x4f, 6)}")
    pool = bgp.stack.pool("bgp", addresses)
    bgp.peer()
    bgp.advertisement("bgp", ipAddressPools=[pool], **ad)
    bgp.start()
    return pool, bgp.stack.namespace("apps")


def established_everywhere(bgp: BGPStack) -> bool:
    return bgp.established() and all(
        [s.get("state") for s in bgp.sessions(h)] == ["Established"] for h in bgp.lab.nodes)


def test_every_node_peers_and_a_service_ip_becomes_a_multipath_route_spreading_the_clients_connections(bgp_stack):
    bgp = bgp_stack
    _, ns = setup(bgp)
    wait_for(lambda: established_everywhere(bgp), SETTLE, interval=0.5,
             what="every node's session Established, at the router and in its record")
    peer = f"{bgp.lab.id}-router"
    for host in bgp.lab.nodes:
        [session] = bgp.sessions(host)
        assert session["peer"] == peer and session["address"] == bgp.router_ip, session
    # The controller sums the records up on the BGPPeer.
    cond = wait_for(lambda: (c := bgp.condition(names.BGP_PEER, peer, "Established")) and c["status"] == "True"
                    and c, SETTLE, interval=0.5, what="the BGPPeer's condition Established True")
    assert str(len(bgp.lab.nodes)) in cond["message"]

    ip = bgp.stack.service(ns, "web")
    bgp.serve(ip)
    bgp.wait_advertised(ip, bgp.lab.nodes)
    for path in bgp.paths(ip):
        assert path.next_hops == (bgp.lab.host(path.protocol).ip4,)
    for host in bgp.lab.nodes:
        wait_for(lambda h=host: [s.get("prefixesAdvertised") for s in bgp.sessions(h)] == [1], SETTLE,
                 interval=0.5, what=f"{host.name}'s record counting one prefix advertised")
    # The remote client's connections are spread over several nodes by the router.
    reached = wait_for(lambda: r if len(r := bgp.reached(ip)) > 1 else None, SETTLE, interval=1,
                       what=f"connections to {ip} served by more than one node")
    assert reached <= {h.name for h in bgp.lab.nodes}

    # leifurctl status lists the sessions.
    status = json.loads(bgp.leifurctl("status", "-o", "json"))
    listed = {(s["node"], s["peer"], s["state"]) for s in status["sessions"]}
    assert listed == {(bgp.stack.node_name(h), peer, "Established") for h in bgp.lab.nodes}, status["sessions"]
    assert status["bgpProblems"] == []
    table = bgp.leifurctl("status")
    assert all(bgp.stack.node_name(h) in table for h in bgp.lab.nodes) and "Established" in table


def canon(ip: str) -> str:
    return ipaddress.ip_address(ip).compressed
