"""The demo: a real control plane, a LAN of node namespaces, and a LoadBalancer Service.

Until the controller and the agent exist, the Service stays at <pending>: that is the
problem Leifur solves, shown on real parts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from kubernetes import client, config

from leifur.dev import controlplane, gobuild, netlab


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def show(cmd: list[str], res: subprocess.CompletedProcess) -> None:
    print("    $ " + " ".join(cmd))
    for line in (res.stdout + res.stderr).rstrip().splitlines():
        print(f"    {line}")


def run(nodes: int = 3, stay_up: bool = True) -> int:
    # SIGTERM unwinds like Ctrl-C so that teardown runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    say("Building etcd, kube-apiserver and kubectl from Go modules (cached after the first time)")
    kubectl = gobuild.ensure_built("kubectl")
    say("Starting etcd and kube-apiserver")
    cp = controlplane.start()
    try:
        say(f"Control plane ready in {cp.startup_seconds:.1f}s at {cp.server}")
        with netlab.Lab(nodes) as lab:
            return _demo(cp, lab, kubectl, stay_up)
    finally:
        say("Tearing down: namespaces, veths, servers")
        cp.stop()


def _demo(cp: controlplane.ControlPlane, lab: netlab.Lab, kubectl, stay_up: bool) -> int:
    assert lab.client is not None
    say(f"Built a LAN: switch namespace {lab.bridge_netns}, "
        + ", ".join(f"{n.name} ({n.ip4})" for n in lab.nodes) + f", client ({lab.client.ip4})")
    lan_kubeconfig = cp.write_kubeconfig(cp.directory / "kubeconfig-lan", server=f"https://{lab.host_ip}:{cp.apiserver_port}")

    api = client.CoreV1Api(config.new_client_from_config(str(cp.kubeconfig)))
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="demo")))
    api.create_namespaced_service("demo", client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(type="LoadBalancer", selector={"app": "web"},
                                  ports=[client.V1ServicePort(port=80, protocol="TCP")]),
    ))
    say("Created Service demo/web of type LoadBalancer")

    node = lab.nodes[0]
    say(f"From inside {node.name}'s namespace, over the LAN, asking the API server for it:")
    cmd = [str(kubectl), "--kubeconfig", str(lan_kubeconfig), "get", "service", "-n", "demo", "web"]
    show(cmd, lab.run(node.netns, cmd, check=False))
    say("EXTERNAL-IP is <pending>: bare metal has no cloud load balancer. Leifur will assign one.")

    cmd = ["ping", "-c", "2", "-W", "1", node.ip4]
    say(f"The client reaches {node.name} across the switch:")
    show(cmd, lab.run(lab.client.netns, cmd, check=False))

    if not stay_up or not sys.stdin.isatty():
        return 0
    say("The environment stays up for exploring. In another shell:")
    print(f"    export KUBECONFIG={cp.kubeconfig}")
    print(f"    {kubectl} get services -A")
    print(f"    ip netns exec {lab.client.netns} ping {node.ip4}")
    say("Press Ctrl-C to tear everything down.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print()
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("the demo builds network namespaces: run it as root")
    sys.exit(run())
