"""What leifurctl status and explain conclude from the agents' records, beyond the controller's rules."""

from __future__ import annotations

from leifur.announce.election import rank
from leifur.cli.analysis import ANNOUNCED, ip_states
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
