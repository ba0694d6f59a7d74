"""The cutover from MetalLB, as docs/operations/migration.md tells it, on the lab's LAN: the real
MetalLB controller numbers the Services, Leifur is installed without announcing (its pools, its
controller and its agents, no advertisement), every Service keeps its IP, and the switch is the
advertisement. A client probes every IP every 10 ms throughout.

MetalLB's speaker does not run here (see the migration page): the state before the switch is
MetalLB's as its controller leaves it (the IPs in the Services' status), with nobody answering,
and the figure is how long after the switch each IP is answered."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time

import pytest
import yaml
from kubernetes.client.rest import ApiException

from leifur.announce.election import owner
from leifur.model import names
from leifur_dev import gobuild, metallb
from leifur_dev.cluster import wait_for
from leifur_dev.stack import Stack

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]

SERVICES = 8


def leifurctl(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", *args, "--kubeconfig",
                          str(stack.cp.kubeconfig)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def kubectl_apply(stack: Stack, manifest: str) -> None:
    res = subprocess.run([str(gobuild.ensure_built("kubectl")), "--kubeconfig", str(stack.cp.kubeconfig), "apply",
                          "--server-side", "-f", "-"], input=manifest, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_the_switch_to_leifurs_agents_keeps_every_ip_and_one_mac_answers_each(stack: Stack) -> None:
    lb_class = f"metallb.io/cutover-{stack.lab.id}"
    stack.agent_args = ("--load-balancer-class", lb_class)
    stack.controller_args = ("--load-balancer-class", lb_class)
    metallb.install_crds(stack.api_client)
    config_ns = stack.namespace("metallb-system")
    pool, l2 = f"{stack.lab.id}-lan", f"{stack.lab.id}-l2"
    custom = stack.cluster.custom
    for body, plural in ((metallb.pool(pool, config_ns, [f"{stack.lan_ip(40)}-{stack.lan_ip(49)}"]), metallb.POOLS),
                         (metallb.l2_advertisement(l2, config_ns, interfaces=["eth0"]), metallb.L2ADVERTISEMENTS)):
        custom.create_namespaced_custom_object(metallb.GROUP, metallb.VERSION, config_ns, plural, body)
    try:
        controller = metallb.MetalLBController(stack.cp.kubeconfig, stack.workdir / "metallb-controller.log", config_ns,
                                               lb_class=lb_class)
        try:
            controller.start().wait_ready()
            apps = stack.namespace("apps")
            names_ = [f"web-{i}" for i in range(SERVICES)]
            for name in names_:
                stack.cluster.create_service(apps, name, loadBalancerClass=lb_class)
                stack.endpoints(apps, name, stack.lab.nodes)
            before = {n: wait_for(lambda n=n: stack.cluster.ips(apps, n), 60, what=f"MetalLB numbered {n}")
                      for n in names_}
        finally:
            controller.stop()
        ips = [ip for (ip,) in before.values()]

        # Leifur without announcing: the pools, the controller and the agents; no advertisement yet.
        kubectl_apply(stack, leifurctl(stack, "migrate", "from-metallb", "-n", config_ns, "--kind",
                                       "IPAddressPool").stdout)
        stack.pools.append(pool)
        stack.start()
        wait_for(lambda: all(names.ANN_ALLOCATED_FROM_POOL in (stack.cluster.service(apps, n)["metadata"].get(
            "annotations") or {}) for n in names_), 60, what="every Service adopted")
        assert {n: stack.cluster.ips(apps, n) for n in names_} == before
        assert not any(stack.answers(ips, duration=1.0).values()), "an agent answered before the switch"

        probe = stack.probe(",".join(ips), duration=60)
        try:
            time.sleep(1)  # probing before the switch too: nothing may answer then
            advertisement = leifurctl(stack, "migrate", "from-metallb", "-n", config_ns, "--kind", "L2Advertisement")
            [ad] = [o for o in yaml.safe_load_all(advertisement.stdout) if o]
            switched = time.time()
            kubectl_apply(stack, advertisement.stdout)
            stack.ads.append(ad["metadata"]["name"])
            wait_for(lambda: all(len(m) == 1 for m in stack.answers(ips, duration=0.3, interval=0.1).values()), 60,
                     what="every IP answered")
            time.sleep(2)
        finally:
            result = stack.stop_probe(probe)

        after_switch = []
        for ip in ips:
            r = result["ips"][ip]
            assert len(r["macs"]) == 1, f"{ip}: answered by {r['macs']}"
            first = r["answers"][0][0] + result["start"] - switched
            assert first > 0, f"{ip} was answered {-first:.3f} s before the switch"
            after_switch.append(first)
            expected = owner([stack.node_name(h) for h in stack.lab.nodes], ip)
            assert stack.mac_owner(r["macs"][0]) == stack.host_of(expected).name
        assert {n: stack.cluster.ips(apps, n) for n in names_} == before  # nothing renumbered at the switch
        print(f"\ncutover: {SERVICES} IPs answered {statistics.median(after_switch) * 1000:.0f} ms after the switch "
              f"(median; longest {max(after_switch) * 1000:.0f} ms), one MAC each")
    finally:
        for plural in (metallb.POOLS, metallb.L2ADVERTISEMENTS):
            with contextlib.suppress(ApiException):
                custom.delete_collection_namespaced_custom_object(metallb.GROUP, metallb.VERSION, config_ns, plural)
