"""An agent's sync reuses its last decisions while nothing they depend on changed: at thousands of
Services deciding is most of a sync's CPU, and most syncs are the periodic resync."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from leifur.agent.app import Agent
from leifur.agent.caches import Caches
from leifur.announce import plan
from leifur.announce.interfaces import Lost


def event(kind: str, name: str, **extra) -> dict:
    return {"type": "ADDED", "object": {"kind": kind, "metadata": {"name": name, "namespace": "apps",
                                                                  "resourceVersion": "1"}, **extra}}


DECISION_INPUTS = ["services", "slices", "nodes", "pools", "ads"]


@pytest.mark.parametrize("informer", DECISION_INPUTS)
def test_a_change_of_what_decisions_are_made_from_is_a_new_generation(informer: str) -> None:
    woken: list[int] = []
    caches = Caches(None, "n1", lambda: woken.append(1))  # type: ignore[arg-type]
    before = caches.generation
    getattr(caches, informer)._handle_event(event("X", "a"))
    assert caches.generation != before and woken == [1]


def test_a_record_wakes_the_sync_but_is_no_new_generation() -> None:
    woken: list[int] = []
    caches = Caches(None, "n1", lambda: woken.append(1))  # type: ignore[arg-type]
    before = caches.generation
    caches.record._handle_event(event("L2NodeStatus", "n2"))
    assert caches.generation == before and woken == [1]


CLUSTER = plan.Cluster(
    services=[{"metadata": {"namespace": "apps", "name": "web", "annotations": {
        "leifur.io/ip-allocated-from-pool": "lan"}}, "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.40"}]}}}],
    endpoint_slices=[{"metadata": {"namespace": "apps", "labels": {"kubernetes.io/service-name": "web"}},
                      "endpoints": [{"nodeName": n} for n in ("a", "b")]}],
    nodes=[{"metadata": {"name": n}} for n in ("a", "b")],
    pools=[{"metadata": {"name": "lan"}, "spec": {"addresses": ["192.0.2.32/27"]}}],
    advertisements=[{"metadata": {"name": "lan"}, "spec": {}}])
LIVE = frozenset({"a", "b"})
# The same cluster but for the Service's IP: what a second generation of the caches may hold.
MOVED = plan.Cluster(**{**CLUSTER.__dict__, "services": [
    {**CLUSTER.services[0], "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.41"}]}}}]})
REUSE_CASES = [
    ("nothing-changed", (1, LIVE, {}), CLUSTER, True),
    ("the-caches-changed", (2, LIVE, {}), MOVED, False),
    ("a-node-died", (1, frozenset({"a"}), {}), CLUSTER, False),
    # Decided from the last decisions (only the dead node's IPs again) only when nothing else changed.
    ("a-node-died-as-the-caches-changed", (2, frozenset({"a"}), {}), MOVED, False),
    ("a-link-went-down", (1, LIVE, {"a": Lost(named=(("eth0",),))}), CLUSTER, False),
]


@pytest.mark.parametrize(("second", "cluster", "reused"), [c[1:] for c in REUSE_CASES], ids=[c[0] for c in REUSE_CASES])
def test_decisions_are_made_again_only_when_their_inputs_change(second: tuple, cluster: plan.Cluster,
                                                                 reused: bool) -> None:
    agent = SimpleNamespace(_decided=None, load_balancer_class=None)
    first, first_view = Agent._decide(agent, 1, CLUSTER, LIVE, {})  # type: ignore[arg-type]
    again, view = Agent._decide(agent, second[0], cluster, second[1], second[2])  # type: ignore[arg-type]
    assert (again is first) == reused
    # Reused or not, what a fresh decision would say.
    assert again == plan.decide_announcements(cluster, second[1], None, second[2])
    assert (view == first_view) == (again == first)
