"""BGP mode end to end: the real control plane and controller, a leifur-agent and an FRR instance
in every node namespace (the agent drives FRR), BIRD 2 as the router, and a client behind the
router on its outside network. What the router learns, installs and forwards is asserted, never
how fast (the blackouts belong to tests/benchmarks)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from test_agent import expected_owner, wait_single_answer

from leifur.model import names
from leifur_dev import bird
from leifur_dev.bgpstack import SETTLE, BGPStack
from leifur_dev.cluster import wait_for
from leifur_dev.stack import Stack

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]


def setup(bgp: BGPStack, v6: bool = False, peer: dict | None = None, pools: tuple[str, ...] = (),
          **ad) -> tuple[str, str, str]:
    """A pool of free LAN addresses (and IPv6 ones with `v6`), a BGPPeer for the router (`peer`
    adds to its spec), an advertisement of the pool (and `pools`) to it, everything started; the
    pool, the advertisement and the test's namespace."""
    addresses = [f"{bgp.stack.lan_ip(40)}-{bgp.stack.lan_ip(49)}"]
    if v6:
        addresses.append(f"{bgp.stack.lan_ip(0x40, 6)}-{bgp.stack.lan_ip(0x4f, 6)}")
    pool = bgp.stack.pool("bgp", addresses)
    bgp.peer(**(peer or {}))
    advertisement = bgp.advertisement("bgp", ipAddressPools=[pool, *pools], **ad)
    bgp.start()
    return pool, advertisement, bgp.stack.namespace("apps")


def established_everywhere(bgp: BGPStack) -> bool:
    return bgp.established() and all(
        [s.get("state") for s in bgp.sessions(h)] == ["Established"] for h in bgp.lab.nodes)


def test_every_node_peers_and_a_service_ip_becomes_a_multipath_route_spreading_the_clients_connections(bgp_stack):
    bgp = bgp_stack
    _, _, ns = setup(bgp)
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



def explained(bgp: BGPStack, ns: str, service: str) -> list[dict]:
    """`leifurctl explain`'s announcements of the Service, one per IP (its JSON output)."""
    rep = json.loads(bgp.leifurctl("explain", f"{ns}/{service}", "-o", "json", ok=(0, 1)))
    return rep["announcements"]


def test_local_traffic_policy_advertises_only_from_nodes_with_a_ready_endpoint_and_explain_names_them(bgp_stack):
    bgp = bgp_stack
    _, _, ns = setup(bgp)
    n1, n2, n3 = bgp.lab.nodes
    peer = f"{bgp.lab.id}-router"
    ip = bgp.stack.service(ns, "local", endpoint_hosts=[n2], externalTrafficPolicy="Local")
    bgp.serve(ip)
    bgp.wait_advertised(ip, [n2])
    assert bgp.reached(ip, tries=5) == {n2.name}
    [announcement] = explained(bgp, ns, "local")
    assert [(a["node"], a["peer"], a["prefix"]) for a in announcement["advertisedBy"]] == [
        (bgp.stack.node_name(n2), peer, f"{ip}/32")], announcement
    table = bgp.leifurctl("explain", f"{ns}/local", ok=(0, 1))
    bgp_rows = [line.split() for line in table.split("BGP:\n", 1)[1].split("\n\n")[0].splitlines()[1:]]
    assert [row[1:3] for row in bgp_rows] == [[bgp.stack.node_name(n2), peer]], table

    # The endpoints move to the other nodes: so do the routes.
    bgp.stack.endpoints(ns, "local", [n1, n3])
    bgp.wait_advertised(ip, [n1, n3])
    assert {a["node"] for a in explained(bgp, ns, "local")[0]["advertisedBy"]} == {
        bgp.stack.node_name(n1), bgp.stack.node_name(n3)}
    # None ready: advertised by no node, and explain says why.
    bgp.stack.endpoints(ns, "local", [n1, n3], ready=False)
    bgp.wait_advertised(ip, [])
    [announcement] = explained(bgp, ns, "local")
    assert not announcement.get("advertisedBy") and "endpoint" in announcement["message"].lower(), announcement


IBGP = bird.RouterConfig(router_asn=64999, node_asn=64999)


@pytest.mark.parametrize("bgp_stack", [{"node_count": 2, "router": IBGP}], indirect=True)
def test_communities_large_communities_and_local_preference_are_visible_at_the_router_over_ibgp(bgp_stack):
    bgp = bgp_stack
    pool, _, ns = setup(bgp, communities=["64999:17", "large:64999:1:2"], localPref=250)
    ip = bgp.stack.service(ns, "web")
    bgp.wait_advertised(ip, bgp.lab.nodes)
    for path in bgp.paths(ip):
        assert (path.communities, path.large_communities, path.local_pref) == ({"64999:17"}, {"64999:1:2"}, 250)
    # A second advertisement of the same pool: the union of the communities, the highest preference.
    bgp.advertisement("more", ipAddressPools=[pool], communities=["64999:18"], localPref=300)
    wait_for(lambda: {(frozenset(p.communities), p.local_pref) for p in bgp.paths(ip)} == {
        (frozenset({"64999:17", "64999:18"}), 300)}, SETTLE, interval=0.5, what="the merged attributes at BIRD")
    assert all(p.large_communities == {"64999:1:2"} for p in bgp.paths(ip))
    assert bgp.advertisers(ip) == {h.name for h in bgp.lab.nodes}


def test_a_deleted_service_and_a_deselected_pool_are_withdrawn_at_the_router(bgp_stack):
    bgp = bgp_stack
    other = bgp.stack.pool("other", [f"{bgp.stack.lan_ip(50)}-{bgp.stack.lan_ip(54)}"])
    pool, advertisement, ns = setup(bgp, pools=(other,))
    gone = bgp.stack.service(ns, "gone")
    kept = bgp.stack.service(ns, "kept", annotations={names.ANN_ADDRESS_POOL: other})
    for ip in (gone, kept):
        bgp.wait_advertised(ip, bgp.lab.nodes)

    bgp.stack.cluster.delete_service(ns, "gone")
    bgp.wait_advertised(gone, [])
    assert bgp.advertisers(kept) == {h.name for h in bgp.lab.nodes}

    # The advertisement stops selecting the Service's pool: withdrawn, the other pool's IP stays.
    moved = bgp.stack.service(ns, "moved")
    bgp.wait_advertised(moved, bgp.lab.nodes)
    bgp.patch(names.BGP_ADVERTISEMENT, advertisement, {"ipAddressPools": [other]})
    bgp.wait_advertised(moved, [])
    assert bgp.advertisers(kept) == {h.name for h in bgp.lab.nodes}
    for host in bgp.lab.nodes:
        wait_for(lambda h=host: [s.get("prefixesAdvertised") for s in bgp.sessions(h)] == [1], SETTLE,
                 interval=0.5, what=f"{host.name}'s record counting the one prefix left")
    assert pool in bgp.stack.pools


def test_ipv6_and_dual_stack_services_are_routed_over_each_nodes_one_session(bgp_stack):
    bgp = bgp_stack
    _, _, ns = setup(bgp, v6=True)
    ip6 = bgp.stack.service(ns, "web6", ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")
    bgp.stack.cluster.create_service(ns, "dual", ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack")
    bgp.stack.endpoints(ns, "dual", bgp.lab.nodes)
    dual = wait_for(lambda: ips if len(ips := bgp.stack.cluster.ips(ns, "dual")) == 2 else None, 30,
                    what="both IPs of the dual-stack Service")
    assert sorted(":" in ip for ip in dual) == [False, True]
    for ip in (ip6, *dual):
        bgp.serve(ip)
        bgp.wait_advertised(ip, bgp.lab.nodes)
        reached = wait_for(lambda i=ip: r if len(r := bgp.reached(i)) > 1 else None, SETTLE, interval=1,
                           what=f"connections to {ip} served by more than one node")
        assert reached <= {h.name for h in bgp.lab.nodes}
    # One session per node carries both families.
    for host in bgp.lab.nodes:
        wait_for(lambda h=host: [(s["state"], s.get("prefixesAdvertised")) for s in bgp.sessions(h)] == [
            ("Established", 3)], SETTLE, interval=0.5, what=f"{host.name}'s one session advertising 3 prefixes")


def answered_after(result: dict, since: float) -> list[tuple[int, str | None]]:
    """(seq, the answering node or None) of every probe datagram sent after `since` (wall clock)."""
    return [(seq, (result["answers"].get(str(seq)) or [None, None])[1])
            for seq, t in enumerate(result["send_times"]) if result["start"] + t > since]


def probed_service(bgp: BGPStack, ns: str) -> tuple[str, subprocess.Popen]:
    """A Service advertised by every node and served by each, and the remote client's flow probe
    running against it once every node serves some of the client's flows."""
    ip = bgp.stack.service(ns, "web")
    bgp.serve(ip)
    bgp.wait_advertised(ip, bgp.lab.nodes)
    probe = bgp.probe(ip, duration=300)
    Stack.probe_first_answer(probe)
    wait_for(lambda: bgp.reached(ip) == {h.name for h in bgp.lab.nodes}, SETTLE, interval=0.5,
             what="every node serving the remote client")
    return ip, probe


def test_a_gracefully_stopped_agent_withdraws_first_and_the_client_loses_nothing(bgp_stack):
    bgp = bgp_stack
    _, _, ns = setup(bgp)
    leaving, *staying = bgp.lab.nodes
    ip, probe = probed_service(bgp, ns)

    agent = bgp.stack.agents[leaving.name]
    agent.signal(signal.SIGTERM)
    assert agent.wait_exit(60) == 0, agent.log_tail(30)
    bgp.wait_advertised(ip, staying)
    gone = time.time()
    # Probes go on over the remaining paths for a while before the probe is stopped.
    wait_for(lambda: len(bgp.reached(ip)) == len(staying), SETTLE, interval=0.5, what="the others serving")
    result = Stack.stop_probe(probe)
    assert result["lost"] == [], f"{len(result['lost'])} of {result['sent']} probes lost"
    assert set(result["nodes"]) == {h.name for h in bgp.lab.nodes}, result["nodes"]
    after = answered_after(result, gone)
    assert after and {node for _, node in after} <= {h.name for h in staying}, after[:20]
    print(f"graceful stop: {result['sent']} probes, none lost")


BFD_ROUTER = bird.RouterConfig(bfd=bird.BFDTimers(min_rx_ms=100, min_tx_ms=100, multiplier=3))
# Without BFD only the hold timer tells the router: the shortest the router accepts from FRR.
HOLD_ROUTER = bird.RouterConfig(hold_time=9)


@pytest.mark.parametrize("bgp_stack,bfd", [
    pytest.param({"node_count": 3, "router": BFD_ROUTER}, True, id="bfd-100msx3"),
    pytest.param({"node_count": 3, "router": HOLD_ROUTER}, False, id="hold-time-9s")], indirect=["bgp_stack"])
def test_a_crashed_node_is_withdrawn_by_bfd_or_the_hold_timer_and_the_client_recovers(bgp_stack, bfd):
    bgp = bgp_stack
    profile = f"{bgp.lab.id}-fast"
    _, _, ns = setup(bgp, peer={"bfdProfile": profile} if bfd else {"holdTime": "9s", "keepaliveTime": "3s"})
    if bfd:
        bgp.bfd_profile("fast", receiveInterval=100, transmitInterval=100, detectMultiplier=3)
    dead, *alive = bgp.lab.nodes
    wanted = ("Established", "up" if bfd else None)
    wait_for(lambda: all([(s["state"], s.get("bfd")) for s in bgp.sessions(h)] == [wanted] for h in bgp.lab.nodes),
             SETTLE, interval=0.5, what=f"every session {wanted}")
    if bfd:
        assert set(bgp.router.bfd_sessions().values()) == {"Up"}
    ip, probe = probed_service(bgp, ns)

    crashed = time.time()
    bgp.crash(dead)
    wait_for(lambda: bgp.next_hops(ip) == bgp.node_hops(ip, alive), SETTLE, interval=0.05,
             what="the dead node's next hop gone from the router's kernel")
    gone = time.time()
    assert bgp.advertisers(ip) == {h.name for h in alive}
    assert bgp.router.sessions()[dead.name] != "Established"
    wait_for(lambda: len(bgp.reached(ip)) == len(alive), SETTLE, interval=0.5, what="the others serving")
    result = Stack.stop_probe(probe)
    # The client recovered: every probe sent once the path was gone was answered, by the others.
    after = answered_after(result, gone)
    assert after and all(node in {h.name for h in alive} for _, node in after), [a for a in after if a[1] is None]
    lost_after_crash = [seq for seq in result["lost"] if result["start"] + result["send_times"][seq] >= crashed]
    assert len(lost_after_crash) == len(result["lost"]), "probes lost before the crash"
    how = "BFD 100 ms x 3" if bfd else "hold time 9 s"
    print(f"crash, {how}: {len(lost_after_crash)} of {result['sent']} probes lost, "
          f"blackout {result['blackout']:.3f} s, path gone {gone - crashed:.3f} s after the crash (as polled)")


def test_layer2_and_bgp_serve_one_pool_at_once(bgp_stack):
    # The same pool in an L2Advertisement too: on the LAN one elected node answers for the IP,
    # and every node still advertises it to the router.
    bgp = bgp_stack
    pool, _, ns = setup(bgp)
    bgp.stack.advertisement("lan", ipAddressPools=[pool], interfaces=["eth0"])
    ip = bgp.stack.service(ns, "web")
    bgp.serve(ip)
    bgp.wait_advertised(ip, bgp.lab.nodes)
    answering = wait_single_answer(bgp.stack, ip)
    assert answering == expected_owner(bgp.stack, ip)
    assert len(bgp.stack.who_answers(ip, duration=1.0)) == 1
    assert wait_for(lambda: bgp.stack.connect(ip), SETTLE, what="a TCP answer on the LAN") == answering
    reached = wait_for(lambda: r if len(r := bgp.reached(ip)) > 1 else None, SETTLE, interval=1,
                       what=f"connections to {ip} from behind the router served by more than one node")
    assert reached <= {h.name for h in bgp.lab.nodes}
    # explain shows both: the LAN's owner, and every node's route to the router.
    [announcement] = explained(bgp, ns, "web")
    assert announcement["state"] == "Announced", announcement
    assert {a["node"] for a in announcement["advertisedBy"]} == {bgp.stack.node_name(h) for h in bgp.lab.nodes}
