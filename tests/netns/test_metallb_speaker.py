"""The real MetalLB speaker (v0.15, layer 2, built from its Go module) in the netns lab: MetalLB's
controller numbers a Service of its class, a speaker runs in each node namespace with the Pod
object a kubelet would have made for it, and the client sees who answers ARP. This is the
announcer a cutover to Leifur's agents takes over from (issue 14)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from leifur_dev import gobuild, metallb
from leifur_dev.cluster import wait_for
from leifur_dev.stack import Stack

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]


def single_answer(stack: Stack, ip: str, timeout: float = 60) -> str:
    """Wait until one MAC alone answers ARP for `ip`, twice in a row; the node it belongs to."""
    macs = wait_for(lambda: m if len(m := stack.who_answers(ip)) == 1 and stack.who_answers(ip) == m else None,
                    timeout, interval=0.2, what=f"one MAC alone answering for {ip}")
    owner = stack.mac_owner(macs[0])
    assert owner is not None, f"{macs[0]} is no node's MAC"
    return owner


def test_metallb_speakers_announce_one_node_and_fail_over_on_sigkill(stack, mlb):
    stack.start(agents=False, controller=False)  # the Node objects; no Leifur program runs
    nodes = {stack.node_name(h): h for h in stack.lab.nodes}
    mlb.create(metallb.pool("lan", mlb.ns, [f"{stack.lan_ip(40)}-{stack.lan_ip(49)}"]))
    mlb.create(metallb.l2_advertisement("lan", mlb.ns))
    mlb.controller()
    mlb.svc("web")
    stack.endpoints(mlb.ns, "web", stack.lab.nodes)
    (ip,) = mlb.wait_ips("web")
    assert stack.who_answers(ip) == []  # numbered, but nobody announces yet

    started = time.monotonic()
    mlb.start_speakers(stack.kubeconfig, {name: (host.netns, host.ip4) for name, host in nodes.items()})
    for s in mlb.speakers.values():
        assert Path(f"/proc/{s.pid}/exe").resolve() == gobuild.binary_path(metallb.SPEAKER).resolve()
    first = single_answer(stack, ip)
    print(f"\nspeakers started: one MAC alone answers after {time.monotonic() - started:.1f}s")
    # The winner of MetalLB's election among all three: every speaker sees the other two alive.
    assert stack.node_name(stack.lab.host(first)) == metallb.l2_owner(list(nodes), ip)
    assert len(stack.who_answers(ip, duration=1.0)) == 1
    dead = stack.node_name(stack.lab.host(first))
    # Its own account of it, owned by the Pod made for it.
    wait_for(lambda: mlb.announcing_nodes("web") == [dead], 30, what=f"a ServiceL2Status naming {dead}")

    second_name = metallb.l2_owner([n for n in nodes if n != dead], ip)
    old_mac, new_mac = stack.lab.host(first).mac, nodes[second_name].mac
    probe = stack.probe(ip, duration=120.0, interval=0.01)
    assert stack.probe_first_answer(probe) == old_mac
    mlb.speakers[dead].kill()  # SIGKILL by its pid: no memberlist Leave, the others must notice
    gone_at = time.time()
    wait_for(lambda: stack.who_answers(ip) == [new_mac], 60, interval=0.2, what=f"{second_name} answering alone")
    result = stack.stop_probe(probe)
    print(f"failover after SIGKILL: blackout {result['longest_gap']:.1f}s "
          f"(probes every 10 ms), {time.time() - gone_at:.1f}s until the new MAC answered alone")
    # One MAC at a time: the dead node's until it died, then the survivors' winner only.
    assert result["first_mac"] == old_mac and result["last_mac"] == new_mac
    assert [(c["from"], c["to"]) for c in result["changes"]] == [(old_mac, new_mac)], result["changes"]
    assert {mac for t, mac in result["answers"] if result["start"] + t > gone_at} == {new_mac}
    assert len(stack.who_answers(ip, duration=1.0)) == 1

    # Restarted, it rejoins through its Pod and wins its IP back (MetalLB's election is not sticky).
    mlb.speakers[dead].start().wait_ready()
    wait_for(lambda: stack.who_answers(ip) == [old_mac], 60, interval=0.2, what=f"{first} answering again")
    assert len(stack.who_answers(ip, duration=1.0)) == 1
