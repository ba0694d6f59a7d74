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

from kubernetes import config

from leifur.dev import cluster, controlplane, gobuild, netlab


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
    lan_kubeconfig = cp.write_kubeconfig(cp.directory / "kubeconfig-lan",
                                         server=f"https://{lab.host_ip}:{cp.apiserver_port}")
    api_client = config.new_client_from_config(str(cp.kubeconfig))
    kube = cluster.Cluster(api_client)
    cluster.install_crds(api_client)
    kube.ensure_namespace("leifur-system")
    kube.ensure_namespace("demo")
    node = lab.nodes[0]
    get_svc = [str(kubectl), "--kubeconfig", str(lan_kubeconfig), "get", "service", "-n", "demo", "web"]

    kube.create_service("demo", "web")
    say("Created Service demo/web of type LoadBalancer. From inside "
        f"{node.name}'s namespace, over the LAN, asking the API server for it:")
    show(get_svc, lab.run(node.netns, get_svc, check=False))
    say("EXTERNAL-IP is <pending>: bare metal has no cloud load balancer.")

    say("Starting leifur-controller and giving it a pool: 203.0.113.10-203.0.113.19")
    ctl = cluster.ControllerProcess(cp.kubeconfig, cp.directory / "leifur-controller.log", identity="demo")
    ctl.start().wait_ready()
    try:
        kube.create_pool("demo", ["203.0.113.10-203.0.113.19"])
        ip = cluster.wait_for(lambda: kube.ips("demo", "web"), 30, what="an IP for demo/web")[0]
        show(get_svc, lab.run(node.netns, get_svc, check=False))
        say(f"demo/web got {ip}. Nothing on the LAN answers for it yet: the agent (ARP/NDP) comes next.")

        cmd = ["ping", "-c", "2", "-W", "1", node.ip4]
        say(f"The client reaches {node.name} across the switch:")
        show(cmd, lab.run(lab.client.netns, cmd, check=False))
        if stay_up and sys.stdin.isatty():
            _stay_up(cp, lab, kubectl)
    finally:
        ctl.stop()
    return 0


def _stay_up(cp: controlplane.ControlPlane, lab: netlab.Lab, kubectl) -> None:
    assert lab.client is not None
    say("The environment stays up for exploring. In another shell:")
    print(f"    export KUBECONFIG={cp.kubeconfig}")
    print(f"    {kubectl} get services,ipaddresspools -A")
    print(f"    ip netns exec {lab.client.netns} ping {lab.nodes[0].ip4}")
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
