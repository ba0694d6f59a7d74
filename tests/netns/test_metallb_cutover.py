"""The cutover from MetalLB, as docs/operations/migration.md tells it, on the lab's LAN: the real
MetalLB (v0.15, controller and layer-2 speakers, built from its Go module) numbers and announces
the Services; the configuration is converted and checked; MetalLB's controller stops; Leifur is
installed without announcing (its pools, controller and agents, no advertisement), adopts every
Service and answers for none; then the announcers switch: MetalLB's advertisement is deleted
(every speaker withdraws) and the converted one is applied; then the speakers stop. A client
probes every IP every 10 ms throughout."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import time

import pytest
import yaml

from leifur.announce.election import owner
from leifur.model import names
from leifur_dev import gobuild, metallb
from leifur_dev.cluster import wait_for
from leifur_dev.stack import Stack

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]

SERVICES = 8


def leifurctl(stack: Stack, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", *args, "--kubeconfig",
                          str(stack.cp.kubeconfig)], capture_output=True, text=True, timeout=60)
    assert res.returncode in ok, res.stdout + res.stderr
    return res


def kubectl(stack: Stack, *args: str, stdin: str | None = None) -> None:
    res = subprocess.run([str(gobuild.ensure_built("kubectl")), "--kubeconfig", str(stack.cp.kubeconfig), *args],
                         input=stdin, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def kubectl_apply(stack: Stack, manifest: str) -> None:
    kubectl(stack, "apply", "--server-side", "-f", "-", stdin=manifest)


def test_the_switch_from_metallbs_speakers_to_leifurs_agents(stack: Stack, mlb: metallb.World, tmp_path) -> None:
    stack.agent_args = ("--load-balancer-class", mlb.lb_class)
    stack.controller_args = ("--load-balancer-class", mlb.lb_class)
    stack.start(agents=False, controller=False)  # the Node objects, for MetalLB's speakers first
    nodes = {stack.node_name(h): h for h in stack.lab.nodes}
    mlb.create(metallb.pool(f"{stack.lab.id}-lan", mlb.ns, [f"{stack.lan_ip(40)}-{stack.lan_ip(49)}"]))
    mlb.create(metallb.l2_advertisement(f"{stack.lab.id}-l2", mlb.ns, interfaces=["eth0"]))
    mlb.controller()
    names_ = [f"web-{i}" for i in range(SERVICES)]
    for name in names_:
        mlb.svc(name)
        stack.endpoints(mlb.ns, name, stack.lab.nodes)
    before = {n: mlb.wait_ips(n) for n in names_}
    ips = [ip for (ip,) in before.values()]
    mlb.start_speakers(stack.kubeconfig, {name: (host.netns, host.ip4) for name, host in nodes.items()})
    metallbs = {ip: nodes[metallb.l2_owner(list(nodes), ip)].mac for ip in ips}
    wait_for(lambda: stack.answers(ips, duration=0.3, interval=0.1) == {ip: [m] for ip, m in metallbs.items()}, 60,
             interval=0.2, what="MetalLB's speakers answering, one MAC per IP")

    # 1. Converted and checked while MetalLB serves.
    planned = tmp_path / "leifur-config.yaml"
    planned.write_text(leifurctl(stack, "migrate", "from-metallb", "-n", mlb.ns).stdout)
    report = json.loads(leifurctl(stack, "migrate", "check", str(planned), "--load-balancer-class", mlb.lb_class,
                                  "-o", "json").stdout)
    leifurs = {ip: nodes[owner(list(nodes), ip)].mac for ip in ips}
    assert {s["service"]: (s["state"], s["announcedBy"]) for s in report["services"]} == {
        f"{mlb.ns}/{n}": ("Keeps", {ip: owner(list(nodes), ip)}) for n, (ip,) in before.items()}

    # 2. MetalLB's controller stops. 3. Leifur without announcing: pools, controller, agents.
    for c in mlb.controllers:
        c.stop()
    kubectl_apply(stack, leifurctl(stack, "migrate", "from-metallb", "-n", mlb.ns, "--kind", "IPAddressPool").stdout)
    stack.pools.append(f"{stack.lab.id}-lan")
    stack.start(nodes=False)
    wait_for(lambda: all(names.ANN_ALLOCATED_FROM_POOL in (mlb.cluster.service(mlb.ns, n)["metadata"].get(
        "annotations") or {}) for n in names_), 60, what="every Service adopted")
    assert {n: mlb.ips(n) for n in names_} == before
    assert stack.answers(ips, duration=1.0) == {ip: [m] for ip, m in metallbs.items()}, "only MetalLB answers"

    # 4. The switch, while the client probes every IP every 10 ms.
    advertisement = leifurctl(stack, "migrate", "from-metallb", "-n", mlb.ns, "--kind", "L2Advertisement").stdout
    [ad] = [o for o in yaml.safe_load_all(advertisement) if o]
    probe = stack.probe(",".join(ips), duration=60)
    try:
        stack.probe_first_answer(probe)
        time.sleep(1)
        switched = time.time()
        # MetalLB's advertisement deleted: every speaker withdraws at once. (Stopping the speakers
        # instead makes them hand the IPs to each other as they go, one by one.)
        kubectl(stack, "delete", "l2advertisements.metallb.io", "-n", mlb.ns, "--all")
        kubectl_apply(stack, advertisement)
        stack.ads.append(ad["metadata"]["name"])
        wait_for(lambda: stack.answers(ips, duration=0.3, interval=0.1) == {ip: [m] for ip, m in leifurs.items()},
                 60, interval=0.2, what="Leifur's agents answering, one MAC per IP")
        # 5. MetalLB removed: its speakers stop (SIGTERM by pid, as a deleted DaemonSet's Pods get it).
        for s in mlb.speakers.values():
            s.stop()
        time.sleep(1)
    finally:
        result = stack.stop_probe(probe)

    blackouts = []
    for ip in ips:
        r = result["ips"][ip]
        answers = [(result["start"] + t, mac) for t, mac in r["answers"]]
        before_switch = {mac for t, mac in answers if t < switched}
        after = [(t, mac) for t, mac in answers if t >= switched]
        assert before_switch == {metallbs[ip]}, f"{ip} before the switch: {before_switch}"
        # One MAC at a time: MetalLB's owner until its speaker stopped, then Leifur's only.
        first_leifur = next(i for i, (_, mac) in enumerate(after) if mac == leifurs[ip])
        assert {mac for _, mac in after[first_leifur:]} == {leifurs[ip]}, f"{ip}: {r['changes']}"
        # The blackout: the longest time without an answer across the switch.
        times = [t for t, _ in answers]
        blackouts.append(max(b - a for a, b in itertools.pairwise(times) if b >= switched))
    assert {n: mlb.ips(n) for n in names_} == before  # nothing renumbered at the switch
    moved = sum(metallbs[ip] != leifurs[ip] for ip in ips)
    print(f"\ncutover of {SERVICES} IPs ({moved} to another node): blackout median "
          f"{statistics.median(blackouts) * 1000:.0f} ms, longest {max(blackouts) * 1000:.0f} ms "
          "(MetalLB's advertisement deleted, then Leifur's applied, each with kubectl)")
