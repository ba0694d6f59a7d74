"""What leifurctl status and explain conclude from the agents' records, beyond the controller's rules."""

from __future__ import annotations

import pytest

from leifur.announce.bgp_plan import NO_BGP_ADVERTISEMENT
from leifur.announce.election import rank
from leifur.cli.analysis import ADVERTISED, ANNOUNCED, NO_SESSION, ip_states, session_problems
from leifur.cli.snapshot import Snapshot
from leifur.model import names

IP = "192.0.2.40"
NODES = ["node-a", "node-b", "node-c"]


def snapshot(lost: dict[str, dict]) -> Snapshot:
    """One Service holding IP, ready endpoints on every node, every agent seen; `lost` per node's record."""
    first = rank(NODES, IP)[0]
    return Snapshot(
        services=[{"metadata": {"namespace": "apps", "name": "web",
                                "annotations": {names.ANN_ALLOCATED_FROM_POOL: "lan"}},
                   "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": IP}]}}}],
        pools=[{"metadata": {"name": "lan"}, "spec": {"addresses": ["192.0.2.32/27"]}}],
        advertisements=[{"metadata": {"name": "lan"}, "spec": {"interfaces": ["eth0"]}}],
        nodes=[{"metadata": {"name": n}} for n in NODES],
        endpoint_slices=[{"metadata": {"namespace": "apps", "labels": {"kubernetes.io/service-name": "web"}},
                          "endpoints": [{"nodeName": n} for n in NODES]}],
        node_statuses=[{"metadata": {"name": n}, "status": {
            "announcements": [{"ip": IP, "mode": "Responder", "interfaces": ["eth0"]}] if n == first else [],
            **({"lost": lost[n]} if n in lost else {})}} for n in NODES])


def test_a_node_whose_record_says_its_link_is_down_is_not_expected_to_announce():
    first, second = rank(NODES, IP)[:2]
    [state] = ip_states(snapshot({}), None)[0].values()
    assert (state.state, state.expected_node) == (ANNOUNCED, first)
    [state] = ip_states(snapshot({first: {"subnets": [], "interfaces": [["eth0"]]}}), None)[0].values()
    # The record of the first still lists the IP: the handover is under way, and explain says so.
    assert state.expected_node == second and state.owner_if_all_live == second
    assert f"{second} should announce it" in state.message
    # A record that says nothing readable is no loss.
    [state] = ip_states(snapshot({first: {"subnets": ["nonsense"]}}), None)[0].values()
    assert state.expected_node == first


PEER = {"metadata": {"name": "r1"}, "spec": {"peerAddress": "203.0.113.1", "myASN": 64512, "peerASN": 64500}}


def bgp_snapshot(l2: bool, bgp_ad: dict | None, session: str | None) -> Snapshot:
    """The Service of `snapshot`, announced on the LAN if `l2`; a BGPPeer; each node's session in `session`."""
    snap = snapshot({})
    if not l2:
        snap.advertisements = []
        for r in snap.node_statuses:
            r["status"]["announcements"] = []
    snap.peers = [PEER]
    snap.bgp_advertisements = [bgp_ad] if bgp_ad else []
    if session:
        for r in snap.node_statuses:
            r["status"]["bgp"] = {"sessions": [{"peer": "r1", "address": "203.0.113.1", "state": session}]}
    return snap


ALL_POOLS = {"metadata": {"name": "all"}, "spec": {}}
OTHER_POOL = {"metadata": {"name": "other"}, "spec": {"ipAddressPools": ["elsewhere"]}}

# name, layer 2 on, BGPAdvertisement, every node's session -> the IP's state, a phrase of its message
BGP_CASES = [
    ("advertised over BGP only", False, ALL_POOLS, "Established", ADVERTISED, "advertised over BGP by node-a to r1"),
    ("sessions down", False, ALL_POOLS, "Active", NO_SESSION, "node-a to r1 (Active)"),
    ("no record of sessions yet", False, ALL_POOLS, None, NO_SESSION, "unknown (no record)"),
    ("no BGPAdvertisement for the pool, no layer 2", False, OTHER_POOL, "Established", NO_BGP_ADVERTISEMENT,
     "no BGPAdvertisement selects pool lan; and no L2Advertisement selects pool lan"),
    ("both modes", True, ALL_POOLS, "Established", ANNOUNCED, "; advertised over BGP by node-a to r1"),
    ("layer 2 serves, BGP sessions down: still served", True, ALL_POOLS, "Idle", ANNOUNCED, "announced by"),
]


@pytest.mark.parametrize("l2,ad,session,state,phrase", [c[1:] for c in BGP_CASES], ids=[c[0] for c in BGP_CASES])
def test_where_an_ip_stands_with_bgp(l2, ad, session, state, phrase):
    [st] = ip_states(bgp_snapshot(l2, ad, session), None)[0].values()
    assert st.state == state and phrase in st.message
    assert {a["node"] for a in st.advertised_by} == (set(NODES) if ad is ALL_POOLS else set())


def test_sessions_not_established_and_broken_objects_are_problems():
    snap = bgp_snapshot(False, ALL_POOLS, "Connect")
    snap.peers.append({"metadata": {"name": "bad"}, "spec": {"peerAddress": "x", "myASN": 1, "peerASN": 2}})
    problems = session_problems(snap)
    assert "BGPPeer bad: spec.peerAddress: 'x' is not an IP address" in problems
    assert [p for p in problems if "session to BGPPeer r1" in p] == [
        f"node {n}: session to BGPPeer r1 (203.0.113.1) is Connect" for n in NODES]
    assert session_problems(bgp_snapshot(False, ALL_POOLS, "Established")) == []
