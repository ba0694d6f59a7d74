"""When an agent may take an IP while its peers decide from other views. Pure: no sockets, no API."""

from __future__ import annotations

from leifur.announce import plan
from leifur.announce.agreement import Agreement, digest, owners
from leifur.model import names

IP = "192.0.2.40"
LIVE = frozenset({"n1", "n2", "n3"})


def decide(services: list[dict], live=LIVE) -> dict[str, plan.Decision]:
    pool = {"metadata": {"name": "lan"}, "spec": {"addresses": ["192.0.2.40-192.0.2.49"]}}
    nodes = [{"metadata": {"name": n}} for n in sorted(LIVE)]
    slices = [{"metadata": {"name": f"{s['metadata']['name']}-x", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": s["metadata"]["name"]}},
               "endpoints": [{"addresses": ["198.51.100.7"], "nodeName": n, "conditions": {"ready": True}}
                             for n in sorted(LIVE)]} for s in services]
    ads = [{"metadata": {"name": "all"}, "spec": {}}]
    return plan.decide_announcements(plan.Cluster(services, slices, nodes, [pool], ads), live, None)


def svc(name: str, ip: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "labels": labels,
                         "annotations": {names.ANN_ALLOCATED_FROM_POOL: "lan"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}


def test_the_digest_changes_with_the_owners_only():
    decisions = decide([svc("web", IP)])
    assert digest(decisions) == digest(decide([svc("web", IP, unrelated="edit")]))
    owner = decisions[IP].announcement.node
    moved = decide([svc("web", IP)], LIVE - {owner})
    assert digest(moved) != digest(decisions)
    assert owners(moved)[IP] != owner and owners(decisions) == {IP: owner}
    assert digest(decide([])) != digest(decisions)


def agreed(me: str = "a", owner: str = "b") -> Agreement:
    """`me`'s Agreement after all views agreed that `owner` announces IP."""
    g = Agreement(me, patience=10.0)
    g.observe("v1", {"b": "v1", "c": "v1"}, {IP: owner}, now=0.0)
    return g


def test_nothing_is_held_while_the_views_agree():
    g = agreed()
    g.observe("v2", {"b": "v2", "c": "v2"}, {IP: "a"}, now=1.0)
    assert g.differing == frozenset()
    assert g.verdict(1.0).held_back({IP}, {"a", "b", "c"}) == set()


def test_an_ip_of_a_live_peer_waits_while_that_peer_sees_otherwise():
    g = agreed()
    # We see the IP move to us; b (its owner) has not seen that yet.
    g.observe("v2", {"b": "v1", "c": "v2"}, {IP: "a"}, now=1.0)
    assert g.differing == {"b"}
    assert g.verdict(1.0).held_back({IP}, {"a", "b", "c"}) == {IP}
    # b catches up (it let the IP go): we take it.
    g.observe("v2", {"b": "v2", "c": "v2"}, {IP: "a"}, now=1.2)
    assert g.verdict(1.2).held_back({IP}, {"a", "b", "c"}) == set()


def test_a_new_ip_waits_while_views_differ_and_is_taken_once_they_agree():
    """A stale peer's view can be newer than the last agreement: it may hold a new IP from a state we
    never saw. Normally the peers see a new Service within milliseconds, and so does the wait."""
    g = agreed()
    new = "192.0.2.41"
    g.observe("v2", {"b": "v1", "c": "v2"}, {IP: "b", new: "a"}, now=1.0)
    assert g.verdict(1.0).held_back({new}, {"a", "b", "c"}) == {new}
    g.observe("v2", {"b": "v2", "c": "v2"}, {IP: "b", new: "a"}, now=1.01)
    assert g.verdict(1.01).held_back({new}, {"a", "b", "c"}) == set()


def test_an_ip_created_deleted_and_reused_inside_one_outage_waits_for_its_first_owner():
    """Regression (issue 12): no agreement since before the IP existed (c's view is stale all along).
    A Service got the IP, owned and announced by b; b's view then stalled; the Service was deleted and
    another got the IP, owned by us. b may still announce it: we wait, although nobody owned it at
    the last agreement."""
    g = agreed()
    new = "192.0.2.41"
    g.observe("v2", {"b": "v2", "c": "v1"}, {IP: "b", new: "b"}, now=1.0)
    g.observe("v3", {"b": "v2", "c": "v1"}, {IP: "b", new: "a"}, now=2.0)
    assert g.verdict(2.0).held_back({new}, {"a", "b", "c"}) == {new}
    # Once b is dead, nothing holds it back any more.
    assert g.verdict(2.0).held_back({new}, {"a", "c"}) == set()


def test_a_reused_ip_waits_for_the_peer_that_held_it_under_the_old_service():
    """The agreed owner is remembered while views differ, even after the IP left our own view."""
    g = agreed(owner="b")
    g.observe("v2", {"b": "v1"}, {}, now=1.0)  # its Service deleted; b has not seen that
    g.observe("v3", {"b": "v1"}, {IP: "a"}, now=1.5)  # a new Service got the same IP
    assert g.verdict(1.5).held_back({IP}, {"a", "b"}) == {IP}


def test_a_dead_owners_ips_are_taken_at_once():
    g = agreed()
    # b died: c has not noticed yet, so the views differ, but nobody announces b's IP any more.
    g.observe("v2", {"c": "v1"}, {IP: "a"}, now=1.0)
    assert g.verdict(1.0).held_back({IP}, {"a", "c"}) == set()


def test_our_own_agreed_ips_are_not_held():
    g = agreed(owner="a")
    g.observe("v2", {"b": "v1"}, {IP: "a"}, now=1.0)
    assert g.verdict(1.0).held_back({IP}, {"a", "b"}) == set()


def test_patience_bounds_the_wait_and_restarts_with_each_disagreement():
    g = agreed()
    g.observe("v2", {"b": "v1"}, {IP: "a"}, now=1.0)
    g.observe("v2", {"b": "v1"}, {IP: "a"}, now=10.9)
    assert not g.impatient(10.9) and g.verdict(10.9).held_back({IP}, {"a", "b"}) == {IP}
    g.observe("v2", {"b": "v1"}, {IP: "a"}, now=11.0)
    assert g.impatient(11.0) and g.verdict(11.0).held_back({IP}, {"a", "b"}) == set()
    # Agreement resets the clock: the next disagreement waits its full patience again.
    g.observe("v2", {"b": "v2"}, {IP: "a"}, now=12.0)
    g.observe("v3", {"b": "v2"}, {IP: "b"}, now=13.0)
    assert not g.impatient(13.0)


def test_unknown_views_do_not_count():
    """A peer before its first decision, or of an older version, sends no view."""
    g = agreed()
    g.observe("v2", {"b": "", "c": "v2"}, {IP: "a"}, now=1.0)
    assert g.differing == frozenset()
    assert g.verdict(1.0).held_back({IP}, {"a", "b", "c"}) == set()


def test_a_starting_agent_waits_for_the_peers_to_let_go():
    """A restarted agent knows no agreed owner yet: everything it would take waits for agreement."""
    g = Agreement("a", patience=10.0)
    g.observe("v2", {"b": "v1"}, {IP: "a"}, now=0.0)
    assert g.verdict(0.0).held_back({IP}, {"a", "b"}) == {IP}
    g.observe("v2", {"b": "v2"}, {IP: "a"}, now=0.1)
    assert g.verdict(0.1).held_back({IP}, {"a", "b"}) == set()
