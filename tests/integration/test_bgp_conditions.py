"""The controller reports what is wrong with BGP objects, and the nodes' sessions, on the objects
themselves (a condition and an Event), against the real API server."""

from __future__ import annotations

import contextlib
import json

import pytest
from kubernetes.client.rest import ApiException

from leifur.kube.client import request
from leifur.model import names
from leifur_dev.cluster import wait_for

pytestmark = pytest.mark.controlplane

KINDS = {names.BGPPEERS: names.BGP_PEER, names.BGPADVERTISEMENTS: names.BGP_ADVERTISEMENT,
         names.BFDPROFILES: names.BFD_PROFILE}


@pytest.fixture
def bgp(env):
    """Create BGP objects named after the test's namespace; all deleted at the end."""
    made: list[tuple[str, str]] = []

    def create(plural: str, name: str, spec: dict) -> str:
        full = f"{env.ns}-{name}"
        env.cluster.custom.create_cluster_custom_object(names.GROUP, names.VERSION, plural, {
            "apiVersion": names.API_VERSION, "kind": KINDS[plural], "metadata": {"name": full}, "spec": spec})
        made.append((plural, full))
        return full

    yield create
    for plural, name in made:
        with contextlib.suppress(ApiException):
            env.cluster.custom.delete_cluster_custom_object(names.GROUP, names.VERSION, plural, name)


def condition(env, plural: str, name: str, type_: str) -> dict | None:
    obj = env.cluster.custom.get_cluster_custom_object_status(names.GROUP, names.VERSION, plural, name)
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def wait_condition(env, plural: str, name: str, type_: str, status: str, phrase: str = "") -> dict:
    def check():
        c = condition(env, plural, name, type_)
        return c if c and c["status"] == status and phrase in c["message"] else None

    return wait_for(check, what=f"{name} {type_}={status} ({phrase})")


def write_sessions(env, node: str, *sessions: dict) -> None:
    body = {"apiVersion": names.API_VERSION, "kind": "L2NodeStatus", "metadata": {"name": node},
            "status": {"count": 0, "ips": "", "announcements": [], "bgp": {"sessions": list(sessions)}}}
    request(env.cluster.api_client, "PATCH", f"/apis/{names.API_VERSION}/{names.L2NODESTATUSES}/{node}",
            query=[("fieldManager", names.AGENT_NAME), ("force", "true")], body=json.dumps(body),
            content_type="application/apply-patch+yaml")


def test_bad_bgp_objects_get_a_condition_and_an_event_and_recover(env, bgp):
    env.controller()
    pool = env.pool("bgp", ["203.0.113.200/29"])
    peer = bgp(names.BGPPEERS, "r1", {"peerAddress": "203.0.113.1", "myASN": 64512, "peerASN": 64500,
                                      "bfdProfile": f"{env.ns}-fast"})
    ad = bgp(names.BGPADVERTISEMENTS, "ad", {"ipAddressPools": [pool], "peers": [peer, f"{env.ns}-r2"]})
    lonely = bgp(names.BGPADVERTISEMENTS, "lonely", {"ipAddressPools": [f"{env.ns}-gone"]})

    c = wait_condition(env, names.BGPPEERS, peer, names.COND_VALID, "False", "does not exist")
    assert c["reason"] == "InvalidSpec"
    wait_for(lambda: env.cluster.has_event("default", peer, "InvalidSpec", kind=names.BGP_PEER),
             what="Warning Event on the peer")
    wait_condition(env, names.BGPADVERTISEMENTS, ad, names.COND_VALID, "False", f"no BGPPeer named {env.ns}-r2")
    wait_condition(env, names.BGPADVERTISEMENTS, lonely, names.COND_VALID, "False", "selects no IPAddressPool")
    wait_condition(env, names.BGPPEERS, peer, "Established", "False", "no node's record")

    # Each fixed by creating what it names: the conditions follow without touching the objects.
    bgp(names.BFDPROFILES, "fast", {"receiveInterval": 100, "transmitInterval": 100})
    wait_condition(env, names.BGPPEERS, peer, names.COND_VALID, "True")
    bgp(names.BGPPEERS, "r2", {"peerAddress": "203.0.113.2", "myASN": 64512, "peerASN": 64500})
    wait_condition(env, names.BGPADVERTISEMENTS, ad, names.COND_VALID, "True")

    # Overlap: a second advertisement of the pool to the same peer with another local preference.
    other = bgp(names.BGPADVERTISEMENTS, "pref", {"ipAddressPools": [pool], "localPref": 300})
    wait_condition(env, names.BGPADVERTISEMENTS, other, names.COND_OVERLAPPING, "True", f"BGPAdvertisement {ad}")
    wait_condition(env, names.BGPADVERTISEMENTS, ad, names.COND_OVERLAPPING, "True", "highest localPref")


def test_a_peer_shows_the_nodes_sessions_from_their_records(env, bgp):
    env.controller()
    peer = bgp(names.BGPPEERS, "r1", {"peerAddress": "203.0.113.1", "myASN": 64512, "peerASN": 64500})
    nodes = [f"{env.ns}-n1", f"{env.ns}-n2"]
    try:
        write_sessions(env, nodes[0], {"peer": peer, "address": "203.0.113.1", "state": "Established"})
        write_sessions(env, nodes[1], {"peer": peer, "address": "203.0.113.1", "state": "Active"})
        c = wait_condition(env, names.BGPPEERS, peer, "Established", "False", f"node {nodes[1]}: Active")
        assert c["reason"] == "SessionsDown" and "1 of 2" in c["message"]
        wait_for(lambda: env.cluster.has_event("default", peer, "SessionsDown", kind=names.BGP_PEER),
                 what="Warning Event for the session down")
        write_sessions(env, nodes[1], {"peer": peer, "address": "203.0.113.1", "state": "Established"})
        wait_condition(env, names.BGPPEERS, peer, "Established", "True", "from 2 node(s)")
    finally:
        for node in nodes:
            with contextlib.suppress(ApiException):
                env.cluster.custom.delete_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES,
                                                                node)
