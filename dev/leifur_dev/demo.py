"""The demo: the whole of Leifur on real parts, on one machine.

A real control plane, a LAN of node namespaces each running the real leifur-agent, the real
leifur-controller, a pool, a LoadBalancer Service, and a client namespace that reaches the
Service's IP over the LAN. Then the announcing agent is killed and the IP moves, with the
blackout measured from the client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from kubernetes import config

from leifur_dev import cluster, controlplane, gobuild, netlab
from leifur_dev.stack import AGENT_PORT, Stack


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def show(cmd: list[str], res: subprocess.CompletedProcess) -> None:
    print("    $ " + " ".join(cmd))
    for line in (res.stdout + res.stderr).rstrip().splitlines():
        print(f"    {line}")
    sys.stdout.flush()


def run(nodes: int = 3, stay_up: bool = True) -> int:
    # SIGTERM unwinds like Ctrl-C so that teardown runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    say("Building etcd, kube-apiserver and kubectl from Go modules (cached after the first time; "
        "the first build takes a few minutes)")
    kubectl = gobuild.ensure_built("kubectl")
    say("Starting etcd and kube-apiserver")
    cp = controlplane.start()
    try:
        say(f"Control plane ready in {cp.startup_seconds:.1f}s at {cp.server}")
        with netlab.Lab(nodes) as lab:
            stack = Stack(cp, config.new_client_from_config(str(cp.kubeconfig)), lab, cp.directory)
            try:
                return _demo(stack, kubectl, stay_up)
            finally:
                say("Tearing down: agents, controller, namespaces, veths, servers")
                stack.stop()
    finally:
        cp.stop()


def _demo(stack: Stack, kubectl, stay_up: bool) -> int:
    lab, kube = stack.lab, stack.cluster
    assert lab.client is not None
    say(f"Built a LAN: switch namespace {lab.bridge_netns}, "
        + ", ".join(f"{n.name} ({n.ip4}, MAC {n.mac})" for n in lab.nodes) + f", client ({lab.client.ip4})")
    node = lab.nodes[0]
    ns = stack.namespace("demo")
    get_svc = [str(kubectl), "--kubeconfig", str(stack.kubeconfig), "get", "service", "-n", ns, "web"]

    kube.create_service(ns, "web")
    stack.endpoints(ns, "web", lab.nodes)
    say(f"Created Service {ns}/web of type LoadBalancer, with endpoints on every node. From inside "
        f"{node.name}'s namespace, over the LAN, asking the API server for it:")
    show(get_svc, lab.run(node.netns, get_svc, check=False))
    say("EXTERNAL-IP is <pending>: bare metal has no cloud load balancer.")

    first, last = stack.lan_ip(40), stack.lan_ip(49)
    say(f"Giving Leifur a pool on the LAN's subnet, {first}-{last}, announced on eth0 of every node")
    pool = stack.pool("demo", [f"{first}-{last}"])
    stack.advertisement("demo", ipAddressPools=[pool], interfaces=["eth0"])
    say(f"Starting leifur-controller, and leifur-agent inside each of the {len(lab.nodes)} node namespaces")
    stack.start()
    ip = cluster.wait_for(lambda: kube.ips(ns, "web"), 30, what="an IP for the Service")[0]
    show(get_svc, lab.run(node.netns, get_svc, check=False))
    say(f"{ns}/web got {ip}.")

    stack.serve(ip)
    owner = _owner(stack, ip)
    say(f"The client asks the LAN who has {ip}: exactly one node answers, {owner.name} (MAC {owner.mac}).")
    served = cluster.wait_for(lambda: stack.connect(ip), 15, what="a TCP answer")
    say(f"A TCP connection from the client to {ip}:80 is served by {served} "
        "(a DNAT rule stands in for kube-proxy).")
    records = [str(kubectl), "--kubeconfig", str(stack.cp.kubeconfig), "get", "l2nodestatuses"]
    say("Each agent records what it announces:")
    show(records, subprocess.run(records, capture_output=True, text=True))

    say(f"Now killing {owner.name}'s agent with SIGKILL, while the client probes {ip} every 10 ms")
    # Its duration only bounds it: it is stopped once another node answers alone.
    probe = stack.probe(ip, duration=120.0, interval=0.01)
    # Killed only once the probe sees the owner answer, so that it measures the whole blackout.
    if (first_mac := stack.probe_first_answer(probe)) != owner.mac:
        raise RuntimeError(f"the probe's first answer came from {first_mac}, not from {owner.name}")
    stack.agents[owner.name].signal(signal.SIGKILL)
    stack.agents[owner.name].wait_exit(10)
    cluster.wait_for(lambda: len(m := stack.who_answers(ip)) == 1 and m[0] != owner.mac, 30,
                     what="another node answering alone")
    result = stack.stop_probe(probe)
    new_owner = stack.mac_owner(result["last_mac"])
    if new_owner in (None, owner.name) or result["longest_gap"] is None:
        raise RuntimeError(f"the probe did not see the IP move: {result['changes']}")
    say(f"{new_owner} took over {ip}: the client saw no answer for "
        f"{result['longest_gap'] * 1000:.0f} ms (its probes are 10 ms apart).")
    served = cluster.wait_for(lambda: stack.connect(ip), 15, what="a TCP answer after failover")
    say(f"The connection to {ip}:80 is now served by {served}.")
    say(f"Restarting {owner.name}'s agent: it takes its IP back once it is ready.")
    stack.start_agent(owner).wait_ready()
    cluster.wait_for(lambda: stack.who_answers(ip) == [owner.mac], 30, what="the IP back on its owner")
    say(f"{owner.name} announces {ip} again.")
    if stay_up and sys.stdin.isatty():
        _stay_up(stack, kubectl, ip)
    return 0


def _owner(stack: Stack, ip: str) -> netlab.Host:
    macs = cluster.wait_for(lambda: m if len(m := stack.who_answers(ip)) == 1 else None, 30,
                            what="one node answering")
    return next(h for h in stack.lab.nodes if h.mac == macs[0])


def _stay_up(stack: Stack, kubectl, ip: str) -> None:
    lab = stack.lab
    assert lab.client is not None
    say("The environment stays up for exploring. In another shell:")
    print(f"    export KUBECONFIG={stack.cp.kubeconfig}")
    print(f"    {kubectl} get services,ipaddresspools,l2advertisements,l2nodestatuses -A")
    print(f"    leifurctl status --kubeconfig {stack.cp.kubeconfig}")
    print(f"    ip netns exec {lab.client.netns} arping -c 3 {ip}")
    print(f"    ip netns exec {lab.client.netns} python3 -c "
          f"\"import socket; print(socket.create_connection(('{ip}', 80)).recv(99).decode())\"")
    # The metrics port answers only a token allowed to read /metrics; the stack holds one.
    print(f"    curl -sk -H \"Authorization: Bearer $(cat {stack.workdir}/metrics-token)\" "
          f"https://{lab.nodes[0].ip4}:{AGENT_PORT}/metrics")
    print(f"    agent logs: {stack.workdir}/agent-node*.log")
    say("Press Ctrl-C to tear everything down.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print()


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("the demo builds network namespaces: run it as root")
    sys.exit(run())
