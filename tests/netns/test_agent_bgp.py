"""The agent in BGP mode end to end: the real control plane and controller, two node namespaces each
running FRR and the real leifur-agent (with the agent's RBAC from deploy/), and BIRD as the router.
The agents advertise a Service IP with their BGPAdvertisement's community, record their sessions
in their L2NodeStatus and metrics, and an agent stopped with SIGTERM withdraws its route before it
exits while its session stays up."""

from __future__ import annotations

import contextlib
import signal

import pytest
from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur_dev import bird, frr
from leifur_dev.cluster import wait_for
from leifur_dev.stack import Stack

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]

SETTLE = 90  # bound for a loaded 2-core machine; sessions come up in seconds when all is well
PASSWORD = "lab-s3cr3t"
BASE = "frr defaults traditional\nhostname {name}\nlog stdout informational\nservice integrated-vtysh-config\n"


def record(stack: Stack, host) -> dict:
    try:
        return stack.cluster.custom.get_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES,
                                                              stack.node_name(host))
    except ApiException:
        return {}


def sessions(stack: Stack, host) -> list[dict]:
    return ((record(stack, host).get("status") or {}).get("bgp") or {}).get("sessions") or []


@contextlib.contextmanager
def bgp_objects(stack: Stack, router: bird.Router, pool: str):
    """The router as a BGPPeer with its password Secret, and a BGPAdvertisement of `pool`; removed after."""
    peer, ad, secret = f"{stack.lab.id}-router", f"{stack.lab.id}-upstream", f"{stack.lab.id}-router-password"
    stack.cluster.ensure_namespace(stack.system_namespace)
    stack.core.create_namespaced_secret(stack.system_namespace, {
        "metadata": {"name": secret}, "type": "kubernetes.io/basic-auth", "stringData": {"password": PASSWORD}})
    custom = stack.cluster.custom
    custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.BGPPEERS, {
        "apiVersion": names.API_VERSION, "kind": names.BGP_PEER, "metadata": {"name": peer},
        "spec": {"myASN": bird.NODE_ASN, "peerASN": bird.ROUTER_ASN, "peerAddress": router.host.ip4,
                 "holdTime": "9s", "keepaliveTime": "3s",
                 "passwordSecret": {"name": secret, "namespace": stack.system_namespace}}})
    custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.BGPADVERTISEMENTS, {
        "apiVersion": names.API_VERSION, "kind": names.BGP_ADVERTISEMENT, "metadata": {"name": ad},
        "spec": {"ipAddressPools": [pool], "communities": ["65000:100"]}})
    try:
        yield peer
    finally:
        for plural, name in ((names.BGPADVERTISEMENTS, ad), (names.BGPPEERS, peer)):
            with contextlib.suppress(ApiException):
                custom.delete_cluster_custom_object(names.GROUP, names.VERSION, plural, name)
        with contextlib.suppress(ApiException):
            stack.core.delete_namespaced_secret(secret, stack.system_namespace)


@pytest.mark.parametrize("stack", [{"node_count": 2, "router": True}], indirect=True)
def test_agents_advertise_record_their_sessions_and_withdraw_before_they_exit(stack: Stack) -> None:
    lab = stack.lab
    router = bird.Router(lab, bird.RouterConfig(password=PASSWORD)).start()
    instances = {h.name: frr.FRR(lab, h).start(BASE.format(name=h.name)) for h in lab.nodes}
    pool = stack.pool("bgp", [f"{lab.lan_ip(40)}-{lab.lan_ip(45)}"])
    with bgp_objects(stack, router, pool) as peer:
        stack.start(agents=False)
        for h in lab.nodes:
            stack.start_agent(h, "--bgp-frr-config", str(instances[h.name].config_path),
                              "--bgp-vty-dir", str(instances[h.name].dir))
        for agent in stack.agents.values():
            agent.wait_ready()
        ip = stack.service(stack.namespace("apps"), "web")
        prefix = f"{ip}/32"

        paths = wait_for(lambda: len(p := router.paths(prefix)) == 2 and p, SETTLE, interval=0.5,
                         what=f"{prefix} from both nodes at the router")
        assert sorted(h for p in paths for h in p.next_hops) == sorted(h.ip4 for h in lab.nodes)
        assert all(p.communities == {"65000:100"} for p in paths)
        for h in lab.nodes:
            [s] = wait_for(lambda h=h: [s for s in sessions(stack, h) if s.get("prefixesAdvertised") == 1], SETTLE,
                           interval=0.5, what=f"{h.name}'s session in its record")
            assert (s["peer"], s["address"], s["state"]) == (peer, router.host.ip4, "Established")
            assert s["since"] and "bfd" not in s
            agent = stack.agents[h.name]
            assert agent.metric("leifur_agent_bgp_session_up", peer=peer) == 1
            assert agent.metric("leifur_agent_bgp_prefixes_advertised", peer=peer) == 1
            assert agent.metric("leifur_agent_bgp_config_applies_total") >= 1
            # Layer 2 is not in play: no L2Advertisement, nothing announced.
            assert record(stack, h)["status"]["announcements"] == []

        leaving, staying = lab.nodes
        stack.agents[leaving.name].signal(signal.SIGTERM)
        assert stack.agents[leaving.name].wait_exit(30) == 0
        # It exited after bgpd had written the withdrawal: nothing left to send, and the session up.
        neighbour = instances[leaving.name].vtysh_json("show bgp neighbors json")[router.host.ip4]
        assert neighbour["bgpState"] == "Established"
        assert neighbour["addressFamilyInfo"]["ipv4Unicast"]["sentPrefixCounter"] == 0
        assert neighbour["messageStats"]["depthOutq"] == 0
        wait_for(lambda: [h for p in router.paths(prefix) for h in p.next_hops] == [staying.ip4], SETTLE,
                 interval=0.5, what=f"{prefix} only from {staying.name}")
        assert router.sessions()[leaving.name] == "Established"
        [s] = sessions(stack, leaving)
        assert (s["state"], s["prefixesAdvertised"]) == ("Established", 0)
