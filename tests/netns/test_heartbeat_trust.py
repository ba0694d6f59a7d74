"""Authenticated heartbeats with the real agents: a host on the LAN that forges or replays them changes
nothing, keys rotate without a refused heartbeat, and a cluster of unsigned and signing agents works
for the length of a rollout. The attacker runs in the client namespace (leifur_dev.attacker)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from test_agent import expected_owner, start, wait_single_answer  # the same directory (pytest's rootless import)

from leifur.agent.heartbeat_keys import describe, keyring_of, read_keys
from leifur.model import names
from leifur_dev import netlab, secretvolume
from leifur_dev.cluster import wait_for
from leifur_dev.stack import Stack

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]

PORT = 7474
FORGERY = ("unauthenticated", "bad-signature", "unknown-key")


def refused(stack: Stack, host: netlab.Host, reasons: tuple[str, ...]) -> float:
    agent = stack.agents[host.name]
    return sum(agent.metric("leifur_agent_heartbeats_rejected_total", reason=r) for r in reasons)


def test_forged_and_replayed_heartbeats_cannot_push_a_healthy_owner_out(stack):
    ns = start(stack)
    ip = stack.service(ns, "web")
    owner = stack.lab.host(wait_single_answer(stack, ip))
    peers = [h for h in stack.lab.nodes if h is not owner]
    pcap = stack.record_heartbeats(owner)
    before = {h.name: {r: refused(stack, h, (r,)) for r in (*FORGERY, "replayed")} for h in peers}
    probe = stack.probe(ip, duration=120.0, interval=0.01)
    assert stack.probe_first_answer(probe) == owner.mac
    # "The owner leaves", unsigned, signed with a made-up tag, and its own datagrams replayed.
    attacker = stack.attack(owner, "leaving", pcap, duration=60)
    # Long enough for every peer to have refused each kind many times over.
    for h in peers:
        wait_for(lambda h=h: all(refused(stack, h, (r,)) >= before[h.name][r] + 50
                                 for r in ("unauthenticated", "bad-signature", "replayed")), 60,
                 what=f"{h.name} refusing each kind of forged heartbeat 50 times")
    sent = stack.attack_result(attacker)
    seen = stack.stop_probe(probe)
    assert sent["replayable"] >= 1 and sent["sent"] > 0
    assert seen["macs"] == [owner.mac], seen["changes"]
    for h in peers:
        agent = stack.agents[h.name]
        assert agent.metric("leifur_agent_peers", state="ready") == len(stack.lab.nodes) - 1
        assert agent.metric("leifur_agent_ownership_changes_total", direction="gained") == 0, h.name


def test_a_dead_owners_ip_moves_while_its_heartbeats_are_forged_and_replayed(stack):
    ns = start(stack)
    ip = stack.service(ns, "web")
    owner = stack.lab.host(wait_single_answer(stack, ip))
    successor = stack.lab.host(expected_owner(stack, ip, [h for h in stack.lab.nodes if h is not owner]))
    pcap = stack.record_heartbeats(owner)
    probe = stack.probe(ip, duration=120.0, interval=0.01)
    assert stack.probe_first_answer(probe) == owner.mac
    # "The owner is alive and ready", unsigned, signed with a made-up tag, and its real datagrams
    # replayed, for far longer than a failover takes; without authentication the IP stayed dark as
    # long as this lasted.
    attacker = stack.attack(owner, "alive", pcap, duration=60)
    stack.agents[owner.name].signal(signal.SIGKILL)
    assert stack.agents[owner.name].wait_exit(10) is not None
    gone_at = time.time()
    wait_for(lambda: stack.who_answers(ip) == [successor.mac], 50, what=f"{successor.name} answering alone")
    forged = stack.attack_result(attacker)
    seen = stack.stop_probe(probe)
    took_over = seen["start"] + min(t for t, mac in seen["answers"] if mac == successor.mac)
    # The guarantee: the successor answered while the forgery was still going on.
    assert took_over < forged["end"], (took_over, forged)
    assert {c["to"] for c in seen["changes"]} == {successor.mac}, seen["changes"]
    print(f"\nfailover under forged heartbeats: {(took_over - gone_at) * 1000:.0f} ms after SIGKILL; the "
          f"attacker sent {forged['sent']} datagrams in {forged['end'] - forged['start']:.1f} s")


def test_a_key_rotation_under_traffic_never_refuses_a_heartbeat(stack):
    """The documented rotation (docs/security.md): stage the new key as `next`, then sign with it
    (`previous` keeps the old one accepted), then drop the old one. The kubelet updates each node's
    copy of the Secret at its own moment, so every step reaches the nodes one by one here, and
    heartbeats flow between each update and the next."""
    ns = start(stack)
    ip = stack.service(ns, "web")
    owner = stack.lab.host(wait_single_answer(stack, ip))
    old, new = stack.heartbeat_keys[names.HEARTBEAT_KEY_CURRENT], os.urandom(names.HEARTBEAT_KEY_BYTES)
    steps = [{"current": old, "next": new}, {"current": new, "previous": old}, {"current": new}]
    before = {h.name: refused(stack, h, FORGERY) for h in stack.lab.nodes}
    probe = stack.probe(ip, duration=300.0, interval=0.01)
    assert stack.probe_first_answer(probe) == owner.mac
    for step in steps:
        for host in stack.lab.nodes:
            secretvolume.project(stack.key_dir(host), step)
            agent = stack.agents[host.name]
            signing = "new" if step["current"] == new else "old"
            ring = describe(keyring_of(str(stack.key_dir(host)), read_keys(str(stack.key_dir(host)))))
            wait_for(lambda agent=agent, ring=ring: _last_keys_change(agent) == ring, 30,
                     what=f"{host.name} reading {sorted(step)}")
            # Each other agent takes in a few heartbeats from this one before the next node moves on.
            _wait_heartbeats_flow(stack, f"{host.name} signing with the {signing} key")
    seen = stack.stop_probe(probe)
    assert seen["macs"] == [owner.mac], seen["changes"]
    # No blackout beyond one probe interval: every probe but the one in flight at the end was answered.
    assert seen["answered"] >= seen["sent"] - 1, {k: seen[k] for k in ("sent", "answered", "longest_gap")}
    assert {h.name: refused(stack, h, FORGERY) for h in stack.lab.nodes} == before
    for host in stack.lab.nodes:
        agent = stack.agents[host.name]
        assert agent.metric("leifur_agent_peers", state="ready") == len(stack.lab.nodes) - 1, host.name
    print(f"\nrotation under traffic: {seen['sent']} probes, {seen['answered']} answers, longest gap "
          f"{seen['longest_gap'] * 1000:.0f} ms")


def _last_keys_change(agent) -> str:
    """What the agent's last 'heartbeat keys changed' line says it uses now."""
    messages = [json.loads(line)["msg"] for line in agent.log_path.read_text().splitlines()
                if "heartbeat keys changed: " in line]
    return messages[-1].removeprefix("heartbeat keys changed: ") if messages else ""


def _wait_heartbeats_flow(stack: Stack, what: str) -> None:
    counts = {h.name: stack.agents[h.name].metric("leifur_agent_heartbeats_total", direction="received")
              for h in stack.lab.nodes}
    wait_for(lambda: all(stack.agents[h.name].metric("leifur_agent_heartbeats_total", direction="received")
                         >= counts[h.name] + 10 for h in stack.lab.nodes), 30, what=f"heartbeats flowing ({what})")


def test_a_rollout_from_agents_that_do_not_sign(stack):
    """docs/security.md's upgrade: agents of the previous version (unsigned only; --insecure-heartbeats
    speaks exactly their format) run beside upgraded agents with --heartbeat-accept-unauthenticated;
    then each is upgraded, and finally the flag is removed node by node. At every step all agents see
    each other ready and exactly one MAC answers."""
    ns = start_unstarted(stack)
    old, upgraded = stack.lab.nodes[0], stack.lab.nodes[1:]
    stack.start(agents=False)
    stack.start_agent(old, "--insecure-heartbeats")
    for host in upgraded:
        stack.start_agent(host, "--heartbeat-accept-unauthenticated")
    for agent in stack.agents.values():
        agent.wait_ready()
    ip = stack.service(ns, "web")
    _assert_one_cluster(stack, ip, "a mixed cluster")
    rollout = [(old, ("--heartbeat-accept-unauthenticated",))] + [(h, ()) for h in stack.lab.nodes]
    for host, flags in rollout:
        agent = stack.agents[host.name]
        agent.signal(signal.SIGTERM)
        assert agent.wait_exit(15) == 0
        stack.start_agent(host, *flags, reuse_credentials=True).wait_ready(60)
        _assert_one_cluster(stack, ip, f"{host.name} restarted with {list(flags) or 'no flag'}")
    # Every agent signs and requires signatures now: an unsigned "leaving" is a forgery.
    before = {h.name: refused(stack, h, ("unauthenticated",)) for h in stack.lab.nodes}
    owner = stack.lab.host(wait_single_answer(stack, ip))
    proc = stack.attack(owner, "leaving", stack.record_heartbeats(owner), duration=60)
    wait_for(lambda: all(refused(stack, h, ("unauthenticated",)) > before[h.name] + 20
                         for h in stack.lab.nodes if h is not owner), 30, what="unsigned heartbeats refused")
    stack.attack_result(proc)
    assert stack.who_answers(ip, duration=1.0) == [owner.mac]


def start_unstarted(stack: Stack) -> str:
    """start()'s pool and advertisement, the agents left to the test."""
    pool = stack.pool("lan", [f"{stack.lan_ip(40)}-{stack.lan_ip(49)}"])
    stack.advertisement("lan", ipAddressPools=[pool], interfaces=["eth0"], mode="Responder")
    return stack.namespace("apps")


def _assert_one_cluster(stack: Stack, ip: str, when: str) -> None:
    n = len(stack.lab.nodes)
    wait_for(lambda: all(a.metric("leifur_agent_peers", state="ready") == n - 1 for a in stack.agents.values()),
             30, what=f"every agent seeing {n - 1} ready peers ({when})")
    owner = wait_single_answer(stack, ip)
    assert owner == expected_owner(stack, ip), when
    assert stack.who_answers(ip, duration=1.0) == [stack.lab.host(owner).mac], when
