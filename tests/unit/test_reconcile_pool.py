"""PoolReconciler against in-memory fakes: the status and Events an IPAddressPool gets, and when its
finalizer lets it go. Every write, Event and enqueue lands in one log, one short line each."""

from __future__ import annotations

import copy

import pytest
from fakes import FakeLister, FakeRecorder

from leifur.controller.reconcile import PoolReconciler, State
from leifur.model import names

FIN = names.POOL_FINALIZER


class FakePoolWriter:
    """The API server and the informer at once, with merge-patch semantics (None deletes a key)."""

    def __init__(self, lister: FakeLister, log: list[str]) -> None:
        self.lister = lister
        self.log = log

    def patch_finalizers(self, pool: dict, finalizers: list[str]) -> dict:
        stored = self._stored(pool)
        before = stored["metadata"].get("finalizers") or []
        notes = [f"+{f}" for f in finalizers if f not in before] + [f"-{f}" for f in before if f not in finalizers]
        self.log.append(f"finalizers {pool['metadata']['name']}: {', '.join(notes)}")
        stored["metadata"]["finalizers"] = list(finalizers)
        return self._commit(stored)

    def patch_status(self, pool: dict, status: dict) -> dict:
        stored = self._stored(pool)
        merged = {**(stored.get("status") or {}), **status}
        stored["status"] = {k: v for k, v in merged.items() if v is not None}
        conds = " ".join(f"{c['type']}={c['status']}" for c in status["conditions"])
        usage = "".join(f" {f}={s['inUse']}/{s['total']}" for f in ("ipv4", "ipv6") if (s := status.get(f)))
        self.log.append(f"status {pool['metadata']['name']}: {conds}{usage}")
        return self._commit(stored)

    def _stored(self, obj: dict) -> dict:
        stored = self.lister.store[obj["metadata"]["name"]]
        # What a resourceVersion-guarded write would refuse with 409.
        assert stored["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], "write on a stale object"
        return copy.deepcopy(stored)

    def _commit(self, obj: dict) -> dict:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.lister.store[meta["name"]]
        else:
            self.lister.store[meta["name"]] = obj
        return copy.deepcopy(obj)


class World:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.pools = FakeLister()
        self.services = FakeLister()
        self.recorder = FakeRecorder(self.log)
        self.state = State()
        self.reconciler = PoolReconciler(self.state, self.pools, self.services, FakePoolWriter(self.pools, self.log),
                                         self.recorder, lambda: self.log.append("enqueue all"))

    def add(self, name: str, spec: dict) -> str:
        self.pools.store[name] = {"apiVersion": names.API_VERSION, "kind": "IPAddressPool",
                                  "metadata": {"name": name, "resourceVersion": "1", "generation": 1}, "spec": spec}
        return name

    def edit(self, name: str, **changes: object) -> None:
        meta = self.pools.store[name]["metadata"]
        meta.update(changes)
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    def hold(self, name: str, ip: str) -> None:
        """A Service of ours showing `ip`, as the Service reconcile leaves it."""
        svc = {"metadata": {"name": name, "namespace": "ns", "finalizers": [names.SERVICE_FINALIZER]},
               "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
               "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
        self.services.store[f"ns/{name}"] = svc
        assert self.state.adopt_all([svc], None) == []

    def sync(self, name: str) -> list[str]:
        start = len(self.log)
        self.reconciler.sync(name)
        return self.log[start:]

    def conditions(self, name: str) -> dict[str, dict]:
        return {c["type"]: c for c in self.pools.store[name]["status"]["conditions"]}


def test_a_pool_gets_its_finalizer_then_its_status_and_a_second_sync_writes_nothing():
    w = World()
    lan = w.add("lan", {"addresses": ["192.0.2.10-192.0.2.11"]})
    # New addresses may be what a pending Service waits for: every Service is looked at again.
    assert w.sync(lan) == ["enqueue all", f"finalizers lan: +{FIN}",
                           "status lan: Valid=True Overlapping=False ServicesOutside=False ipv4=0/2"]
    assert w.sync(lan) == []
    w.hold("a", "192.0.2.10")  # the Service reconcile enqueues the pool of an IP it hands out
    assert w.sync(lan) == ["status lan: Valid=True Overlapping=False ServicesOutside=False ipv4=1/2"]


@pytest.mark.parametrize(("spec", "fragment"), [
    pytest.param({"addresses": ["nope"]}, "'nope'", id="not-an-address"),
    pytest.param({"addresses": []}, "spec.addresses is empty", id="no-addresses"),
    pytest.param({}, "spec.addresses is required", id="addresses-missing"),
    pytest.param({"addresses": ["192.0.2.20-192.0.2.10"]}, "starts after it ends", id="range-backwards"),
    pytest.param({"addresses": ["192.0.2.0/24", "192.0.2.10"]}, "each address may be listed once",
                 id="listed-twice"),
    pytest.param({"addresses": ["192.0.2.10"], "autoAssign": "yes"}, "autoAssign", id="not-a-bool"),
])
def test_an_invalid_pool_is_reported_on_itself_and_disturbs_no_other(spec, fragment):
    w = World()
    good = w.add("good", {"addresses": ["198.51.100.0/30"]})
    w.sync(good)
    before = copy.deepcopy(w.pools.store[good])
    bad = w.add("bad", spec)

    lines = w.sync(bad)
    assert lines == [f"finalizers bad: +{FIN}", "event bad Warning InvalidSpec", "status bad: Valid=False"]
    valid = w.conditions(bad)[names.COND_POOL_VALID]
    assert valid["reason"] == "InvalidSpec" and fragment in valid["message"] and "'bad'" in valid["message"]
    assert "ipv4" not in w.pools.store[bad]["status"]
    assert w.sync(good) == [] and w.pools.store[good] == before
    assert w.sync(bad) == []  # reported once


def test_a_pool_edited_into_something_invalid_loses_its_usage_and_says_why():
    w = World()
    lan = w.add("lan", {"addresses": ["192.0.2.10-192.0.2.11"]})
    w.sync(lan)
    w.pools.store[lan]["spec"] = {"addresses": ["192.0.2.10-"]}
    w.edit(lan, generation=2)
    # It can no longer be allocated from: every Service is looked at again.
    [*first, status] = w.sync(lan)
    assert first == ["enqueue all", "event lan Warning InvalidSpec"] and status.startswith("status lan:")
    assert w.conditions(lan)[names.COND_POOL_VALID]["status"] == "False"
    assert "ipv4" not in w.pools.store[lan]["status"]


def test_overlapping_pools_each_name_the_others():
    w = World()
    for name, cidr in (("a", "192.0.2.0/30"), ("b", "192.0.2.2/31"), ("c", "192.0.2.3/32"), ("d", "198.51.100.0/30")):
        w.add(name, {"addresses": [cidr]})
    for name in "abcd":
        w.sync(name)
    assert {n: w.conditions(n)[names.COND_POOL_OVERLAPPING]["message"] for n in "abcd"} == {
        "a": "shares addresses with b, c", "b": "shares addresses with a, c", "c": "shares addresses with a, b",
        "d": "no overlap with other pools"}
    assert [line for line in w.log if line.startswith("event")] == [
        "event a Warning Overlap", "event b Warning Overlap", "event c Warning Overlap"]


@pytest.mark.parametrize(("held", "also_in", "blocked"), [
    pytest.param(None, None, False, id="nothing-held"),
    pytest.param("192.0.2.10", None, True, id="held-only-from-this-pool"),
    # Its Service is credited to the other pool: no reason to wait.
    pytest.param("192.0.2.10", ["192.0.2.8/29"], False, id="held-but-in-another-pool-too"),
])
def test_a_deleted_pool_waits_for_the_services_holding_its_ips(held, also_in, blocked):
    w = World()
    lan = w.add("lan", {"addresses": ["192.0.2.10-192.0.2.11"]})
    if also_in:
        w.sync(w.add("wide", {"addresses": also_in}))
    w.sync(lan)
    if held:
        w.hold("a", held)
    w.edit(lan, deletionTimestamp="2026-01-02T00:00:00Z")

    lines = [line for line in w.sync(lan) if line != "enqueue all"]
    if blocked:
        assert lines == ["event lan Warning DeletionBlocked"] and "ns/a" in w.recorder.messages[-1]
        assert w.pools.store[lan]["metadata"]["finalizers"] == [FIN]
        w.state.allocator.release("ns/a")  # the Service lets go
        lines = w.sync(lan)
    assert lines == [f"finalizers lan: -{FIN}"]
    assert lan not in w.pools.store


def test_an_invalid_pool_still_protects_what_its_last_valid_version_handed_out():
    w = World()
    lan = w.add("lan", {"addresses": ["192.0.2.10-192.0.2.11"]})
    w.sync(lan)
    w.hold("a", "192.0.2.10")
    w.pools.store[lan]["spec"] = {"addresses": ["nope"]}
    w.edit(lan, generation=2)
    w.sync(lan)
    w.edit(lan, deletionTimestamp="2026-01-02T00:00:00Z")
    assert "event lan Warning DeletionBlocked" in w.sync(lan)
    assert w.pools.store[lan]["metadata"]["finalizers"] == [FIN]
