"""Address conflicts end to end (docs/agent.md#address-conflicts): the real agents on the lab's
LAN, a client namespace standing in for a host outside the cluster."""

from __future__ import annotations

import ipaddress
import signal
import sys

import pytest

from leifur.announce.election import owner
from leifur.model import names
from leifur_dev.cluster import wait_for
from leifur_dev.probe import claims_in_capture
from leifur_dev.stack import Stack

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]


def start(stack: Stack) -> str:
    pool = stack.pool("lan", [f"{stack.lan_ip(40)}-{stack.lan_ip(49)}",
                              f"{stack.lan_ip(0x40, 6)}-{stack.lan_ip(0x4f, 6)}"])
    stack.advertisement("lan", ipAddressPools=[pool], interfaces=["eth0"])
    stack.start()
    return stack.namespace("apps")


def owner_host(stack: Stack, ip: str, hosts=None) -> str:
    hosts = stack.lab.nodes if hosts is None else hosts
    return stack.host_of(owner([stack.node_name(h) for h in hosts], ip)).name


def conflict_condition(stack: Stack, ns: str, name: str) -> dict | None:
    conds = (stack.cluster.service(ns, name).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == names.COND_ADDRESS_CONFLICT), None)


def record(stack: Stack, node: str) -> dict:
    return stack.cluster.custom.get_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES, node)


@pytest.mark.parametrize("version", [4, 6], ids=["ipv4", "ipv6"])
def test_a_new_ip_a_foreign_host_already_uses_is_not_announced_and_is_reported(stack, version):
    ns = start(stack)
    client = stack.lab.client
    assert client is not None
    ip = str(ipaddress.ip_address(stack.lan_ip(44 if version == 4 else 0x44, version)))
    # The host outside the cluster has the address before the Service asks for it (IPv6 without
    # DAD, so that it answers at once).
    extra = ["nodad"] if version == 6 else []
    stack.lab.run(client.netns, ["ip", f"-{version}", "addr", "add", f"{ip}/{32 if version == 4 else 128}",
                                 "dev", "eth0", *extra])
    family = "IPv4" if version == 4 else "IPv6"
    got = stack.service(ns, "web", annotations={names.ANN_LOAD_BALANCER_IPS: ip}, ipFamilies=[family],
                        ipFamilyPolicy="SingleStack")
    assert got == ip
    key = f"{ns}/web"

    event = wait_for(lambda: stack.cluster.has_event(ns, "web", names.REASON_ADDRESS_IN_USE), 30,
                     what="an AddressInUse event")
    assert event["type"] == "Warning" and ip in event["message"] and client.mac in event["message"]
    cond = wait_for(lambda: conflict_condition(stack, ns, "web"), 30, what="the AddressConflict condition")
    assert cond["status"] == "True" and cond["reason"] == names.REASON_ADDRESS_IN_USE
    assert ip in cond["message"] and client.mac in cond["message"]
    first = owner_host(stack, ip)
    node = stack.node_name(stack.lab.host(first))
    [entry] = record(stack, node)["status"]["conflicts"]
    assert entry["ip"] == ip and entry["mac"] == client.mac and entry["kind"] == "InUse"
    assert entry["services"] == [key]
    owner_agent = stack.agents[first]
    assert owner_agent.metric("leifur_agent_address_conflicts", kind="InUse") == 1
    assert owner_agent.metric("leifur_agent_address_probes_total", result="InUse") >= 1

    # No node announces it: none answers, and none counts it as announced.
    family_label = f"ipv{version}"
    for host in stack.lab.nodes:
        assert stack.agents[host.name].metric("leifur_agent_announced_ips", family=family_label) == 0
    node_macs = {h.mac for h in stack.lab.nodes}
    assert not set(stack.who_answers(ip, duration=1.0)) & node_macs


def test_a_foreign_claim_while_we_announce_is_defended_then_reported(stack):
    ns = start(stack)
    client = stack.lab.client
    assert client is not None
    ip = stack.service(ns, "web")
    first = owner_host(stack, ip)
    owner_mac = stack.lab.host(first).mac
    wait_for(lambda: stack.who_answers(ip) == [owner_mac], 30, what="the owner answering alone")
    assert conflict_condition(stack, ns, "web") is None

    pcap = stack.workdir / "client.pcap"
    capture = stack.capture(pcap)
    try:
        # A host claims the IP four times, half a second apart (bounded: 2 s at most).
        claimant = stack.lab.run(client.netns, [sys.executable, "-m", "leifur_dev.claimant", "--ip", ip,
                                                "--interval", "0.5", "--duration", "2"], timeout=30)
        assert claimant.returncode == 0
        cond = wait_for(lambda: conflict_condition(stack, ns, "web"), 30, what="the AddressConflict condition")
        event = wait_for(lambda: stack.cluster.has_event(ns, "web", names.REASON_ADDRESS_CLAIMED), 30,
                         what="an AddressClaimed event")
    finally:
        capture.terminate()
        capture.wait(10)
    assert cond["status"] == "True" and cond["reason"] == names.REASON_ADDRESS_CLAIMED
    assert ip in cond["message"] and client.mac in cond["message"]
    assert event["type"] == "Warning" and client.mac in event["message"]
    assert stack.agents[first].metric("leifur_agent_address_conflicts", kind="Claimed") == 1

    claims = claims_in_capture(str(pcap), ip)
    foreign = [t for t, mac in claims if mac == client.mac]
    assert foreign, claims
    # The defence: the owner announced the IP again after the first foreign claim (nobody on the
    # LAN asked for it while the capture ran, so that was no answer to a request).
    defended = [t for t, mac in claims if mac == owner_mac and t > foreign[0]]
    assert defended, claims
    # Only the owner and the foreign host claimed it: no other node of ours joined in.
    assert {mac for _, mac in claims} == {owner_mac, client.mac}
    # The owner keeps announcing it (policy defend).
    assert stack.who_answers(ip) == [owner_mac]


def test_a_failover_is_not_probed_and_raises_no_conflict(stack):
    ns = start(stack)
    ip = stack.service(ns, "web")
    first = owner_host(stack, ip)
    wait_for(lambda: stack.who_answers(ip) == [stack.lab.host(first).mac], 30, what="the owner answering alone")
    assert stack.agents[first].metric("leifur_agent_address_probes_total", result="Clear") == 1
    survivors = [h for h in stack.lab.nodes if h.name != first]
    second = owner_host(stack, ip, survivors)
    stack.agents[first].signal(signal.SIGKILL)
    assert stack.agents[first].wait_exit(10) is not None
    wait_for(lambda: stack.who_answers(ip) == [stack.lab.host(second).mac], 30, what=f"{second} answering alone")
    for host in survivors:
        agent = stack.agents[host.name]
        assert agent.metric("leifur_agent_address_probes_total") == 0, "a failover waited for a probe"
        assert agent.metric("leifur_agent_address_conflicts") == 0
    assert conflict_condition(stack, ns, "web") is None
    assert stack.cluster.has_event(ns, "web", names.REASON_ADDRESS_CLAIMED) is None
    # And the killed agent, restarted, takes its IP back without a probe or a conflict either.
    stack.start_agent(stack.lab.host(first)).wait_ready()
    wait_for(lambda: stack.who_answers(ip) == [stack.lab.host(first).mac], 30, what="the IP back on its owner")
    assert stack.agents[first].metric("leifur_agent_address_probes_total") == 0
    assert all(stack.agents[h.name].metric("leifur_agent_address_conflicts") == 0 for h in stack.lab.nodes)
    assert conflict_condition(stack, ns, "web") is None



def test_with_the_yield_policy_the_owner_stops_announcing_until_the_claims_stop(stack):
    # Short intervals so that the claims end and the conflict clears within the test.
    stack.agent_args = ("--address-conflict-policy", "yield", "--address-defend-interval", "2",
                        "--address-conflict-clear-after", "10")
    ns = start(stack)
    client = stack.lab.client
    assert client is not None
    ip = stack.service(ns, "web")
    owner_mac = stack.lab.host(owner_host(stack, ip)).mac
    wait_for(lambda: stack.who_answers(ip) == [owner_mac], 30, what="the owner answering alone")
    claimant = stack.lab.popen(client.netns, [sys.executable, "-m", "leifur_dev.claimant", "--ip", ip,
                                              "--interval", "0.5", "--duration", "3"])
    try:
        cond = wait_for(lambda: conflict_condition(stack, ns, "web"), 30, what="the AddressConflict condition")
        assert cond["reason"] == names.REASON_ADDRESS_CLAIMED
        # Yielded: no node of ours answers for it while the host claims it.
        wait_for(lambda: not set(stack.who_answers(ip)) & {h.mac for h in stack.lab.nodes}, 30,
                 what="no node answering while yielded")
    finally:
        claimant.terminate()
        claimant.wait(30)
    # Once the claims have stopped for the clear-after time, the owner announces it again.
    wait_for(lambda: stack.who_answers(ip) == [owner_mac], 30, what="the owner announcing again")
    wait_for(lambda: conflict_condition(stack, ns, "web") is None, 30, what="the condition removed")
