"""Restarts change no IP: controller SIGKILLed mid-churn, two controllers at once, leader
handover, and an API server restart."""

from __future__ import annotations

import collections
import ipaddress
import random

import pytest
from kubernetes import client

from leifur_dev.cluster import wait_for

pytestmark = pytest.mark.controlplane

SEED = 20261124


def duplicates(ips_by_service: dict[str, list[str]]) -> dict[str, list[str]]:
    owners = collections.defaultdict(list)
    for key, ips in ips_by_service.items():
        for ip in ips:
            owners[ip].append(key)
    return {ip: keys for ip, keys in owners.items() if len(keys) > 1}


def ours(env) -> dict[str, list[str]]:
    return {k: v for k, v in env.cluster.all_lb_ips().items() if k.startswith(env.ns + "/")}


def leader(env) -> str | None:
    lease = client.CoordinationV1Api(env.cluster.api_client).read_namespaced_lease("leifur-controller", "leifur-system")
    return lease.spec.holder_identity


def test_controller_killed_mid_churn_changes_no_assigned_ip(env):
    rng = random.Random(SEED)
    c = env.controller()
    net = ipaddress.ip_network("203.0.113.160/27")
    env.pool("churn", [str(net)])
    live = [f"s{i}" for i in range(12)]
    for name in live:
        env.svc(name)
    wait_for(lambda: len(ours(env)) == len(live), 60, what="initial allocation")
    seen: dict[str, str] = {k: v[0] for k, v in ours(env).items()}
    counter = len(live)
    kills = 0
    for step in range(40):
        op = rng.random()
        if op < 0.4:
            name = f"s{counter}"
            counter += 1
            env.svc(name)
            live.append(name)
        elif op < 0.7 and live:
            name = live.pop(rng.randrange(len(live)))
            env.cluster.delete_service(env.ns, name)
            seen.pop(f"{env.ns}/{name}", None)
        if rng.random() < 0.25:
            c.kill()  # SIGKILL, wherever the reconcile happens to be
            kills += 1
            c.start()
        now = ours(env)
        assert duplicates(now) == {}, f"step {step}"
        for key, ips in now.items():
            # An IP once assigned never changes while its Service lives.
            assert seen.setdefault(key, ips[0]) == ips[0], f"{key} changed from {seen[key]} to {ips[0]}"
    c.wait_ready(60)
    expected = {f"{env.ns}/{n}" for n in live}
    final = wait_for(lambda: (now := ours(env)) and set(now) == expected and now, 90, what="every Service has an IP")
    assert duplicates(final) == {}
    assert all(ipaddress.ip_address(v[0]) in net for v in final.values())
    assert all(seen[k] == v[0] for k, v in final.items() if k in seen)
    assert kills >= 5
    print(f"\nchurn: {counter} Services created, {kills} SIGKILLs, {len(final)} live at the end, no IP changed")


def test_two_controllers_never_double_assign_and_hand_over(env):
    # A Lease far longer than a release takes, so that "promptly" below tells the two apart.
    lease = ("--lease-duration", "30", "--renew-deadline", "20")
    first = env.controller(*lease, identity="alpha")
    second = env.controller(*lease, identity="beta")
    env.pool("pair", ["203.0.113.192/27"])
    wait_for(lambda: leader(env) in ("alpha", "beta"), what="a leader")
    for i in range(10):
        env.svc(f"a{i}")
    assert duplicates(ours(env)) == {}
    wait_for(lambda: len(ours(env)) == 10, 60, what="first batch")
    before = ours(env)

    # SIGKILL the leader: the other takes over once the Lease expires, and changes nothing.
    lead, other = (first, second) if leader(env) == "alpha" else (second, first)
    lead.kill()
    for i in range(10, 16):
        env.svc(f"a{i}")
        assert duplicates(ours(env)) == {}
    wait_for(lambda: len(ours(env)) == 16, 90, what="standby takes over")
    after = ours(env)
    assert duplicates(after) == {}
    assert {k: after[k] for k in before} == before
    assert leader(env) == ("beta" if other is second else "alpha")

    # A graceful stop releases the Lease: a restarted replica leads next without waiting it out.
    lead.start().wait_ready()
    assert other.stop() == 0
    wait_for(lambda: leader(env) == ("alpha" if lead is first else "beta"), 15,
             what="a handover well before the 30 s Lease runs out")
    env.svc("after-handover")
    env.wait_ips("after-handover")
    assert duplicates(ours(env)) == {}


def test_api_server_restart_changes_no_ip(env):
    # A Lease long enough to outlast the restart even on a loaded machine: the controller rides it
    # out without exiting (after a renew deadline's worth of failures it would exit, by design).
    c = env.controller("--lease-duration", "90", "--renew-deadline", "60")
    env.pool("apirestart", ["203.0.113.224/28"])
    for i in range(5):
        env.svc(f"r{i}")
    wait_for(lambda: len(ours(env)) == 5, 60, what="allocation")
    before = ours(env)
    env.cp.stop_component("kube-apiserver")
    env.cp.start_component("kube-apiserver")
    env.cp.wait_ready()
    env.svc("new")
    env.wait_ips("new", timeout=60)
    after = ours(env)
    assert {k: after[k] for k in before} == before
    assert duplicates(after) == {}
    assert c.alive()
