"""ServiceReconciler against in-memory fakes: the order of its writes, what a failed write leaves
behind, and that one Service's trouble stays its own (in the spirit of MetalLB's TestControllerMutation).

Every call the reconciler makes (writes, allocator releases, Events, enqueues) lands in one log,
one short line each, so that a row can say exactly what happens in which order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from fakes import FakeLister, FakeRecorder
from kubernetes.client.exceptions import ApiException

from leifur.controller import allocation
from leifur.controller.reconcile import ServiceReconciler, State
from leifur.ipam import allocator
from leifur.model import names, service
from leifur.model.objects import key_of

FIN = names.SERVICE_FINALIZER
FROM_POOL = names.ANN_ALLOCATED_FROM_POOL


# -- fakes ------------------------------------------------------------------------------------


class FakeServiceWriter:
    """The API server and the informer at once: a write lands in the lister's store at once.

    Like the real server it refuses a write built on a stale resourceVersion (409), applies merge
    patch semantics (lists replaced whole, None deletes), and removes an object being deleted once
    its last finalizer is gone. `fail_when(text)` makes the next call whose log line contains
    `text` fail with a 500, after logging it.
    """

    def __init__(self, lister: FakeLister, log: list[str]) -> None:
        self.lister = lister
        self.log = log
        self._fail: list[str] = []

    def fail_when(self, text: str) -> None:
        self._fail.append(text)

    def patch_metadata(self, svc: dict, finalizers: list[str], annotations: dict[str, str | None]) -> dict:
        stored = self._stored(svc)
        self._call(f"metadata {key_of(svc)}: {self._set_metadata(stored, finalizers, annotations)}")
        return self._commit(stored)

    def patch_status(self, svc: dict, ingress: list[dict], conditions: list[dict],
                     finalizers: list[str] | None = None,
                     annotations: dict[str, str | None] | None = None) -> dict:
        """One write, as the API server takes it on a Service's /status: with `finalizers`, the
        metadata too (the line ends `with` what it changed)."""
        stored = self._stored(svc)
        ours = next((c for c in conditions if c["type"] == names.COND_SERVICE_ALLOCATED), None)
        line = f"status {key_of(svc)}: {','.join(i.get('ip') or i['hostname'] for i in ingress) or '-'}"
        line += f" [{ours['status']} {ours['reason']}]" if ours else ""
        if finalizers is not None:
            line += f" with {self._set_metadata(stored, finalizers, annotations or {})}"
        self._call(line)
        status = stored.setdefault("status", {})
        status["loadBalancer"] = {"ingress": ingress} if ingress else {}
        if conditions:
            status["conditions"] = conditions
        else:
            status.pop("conditions", None)
        return self._commit(stored)

    @staticmethod
    def _set_metadata(stored: dict, finalizers: list[str], annotations: dict[str, str | None]) -> str:
        """Set them on `stored`; what changed, as a log line says it."""
        meta = stored["metadata"]
        before = meta.get("finalizers") or []
        notes = [f"+{f}" for f in finalizers if f not in before] + [f"-{f}" for f in before if f not in finalizers]
        notes += [f"{k}={v}" if v is not None else f"-{k}" for k, v in annotations.items()]
        meta["finalizers"] = list(finalizers)
        merged = {**(meta.get("annotations") or {}), **annotations}
        meta["annotations"] = {k: v for k, v in merged.items() if v is not None}
        return ", ".join(notes) or "no change"

    def _stored(self, obj: dict) -> dict:
        stored = self.lister.store.get(key_of(obj))
        if stored is None:
            raise ApiException(status=404, reason="Not Found")
        if stored["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return copy.deepcopy(stored)

    def _call(self, line: str) -> None:
        self.log.append(line)
        for text in self._fail:
            if text in line:
                self._fail.remove(text)
                self.log[-1] += " -> 500"
                raise ApiException(status=500, reason="Internal Server Error")

    def _commit(self, obj: dict) -> dict:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.lister.store[key_of(obj)]
        else:
            self.lister.store[key_of(obj)] = obj
        return copy.deepcopy(obj)


class World:
    """One ServiceReconciler wired to fakes, with the pools given (name -> addresses)."""

    def __init__(self, pools: dict[str, list[str]], lb_class: str | None = None) -> None:
        self.log: list[str] = []
        self.services = FakeLister()
        self.records = FakeLister()  # the agents' L2NodeStatus records
        self.writer = FakeServiceWriter(self.services, self.log)
        self.recorder = FakeRecorder(self.log)
        self.queue: list[str] = []
        self.state = State()
        self.state.refresh_pools([{"metadata": {"name": n}, "spec": {"addresses": a}} for n, a in pools.items()])
        release = self.state.allocator.release

        def logged_release(key: str) -> list[service.IP]:
            ips = release(key)
            if ips:
                self.log.append(f"release {key}: {','.join(map(str, ips))}")
            return ips

        self.state.allocator.release = logged_release
        self.reconciler = ServiceReconciler(
            self.state, self.services, FakeLister([{"metadata": {"name": "ns", "labels": {}}}]), self.writer,
            self.recorder, lb_class, lambda name: self.log.append(f"enqueue pool {name}"), self._enqueue,
            self.records)

    def _enqueue(self, key: str) -> None:
        self.log.append(f"enqueue {key}")
        if key not in self.queue:
            self.queue.append(key)

    def add(self, obj: dict) -> str:
        self.services.store[key_of(obj)] = copy.deepcopy(obj)
        return key_of(obj)

    def edit(self, key: str, change: Callable[[dict], None]) -> None:
        """A user's edit: changes the stored object and its resourceVersion."""
        obj = self.services.store[key]
        change(obj)
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)

    def sync(self, key: str) -> list[str]:
        """One sync; the lines it logged."""
        start = len(self.log)
        self.reconciler.sync(key)
        return self.log[start:]

    def drain(self) -> None:
        """Sync what was enqueued, as the work queue would."""
        for _ in range(20):
            if not self.queue:
                return
            self.reconciler.sync(self.queue.pop(0))
        raise AssertionError(f"the queue does not settle: {self.queue}")

    def shown(self, key: str) -> list[str]:
        """The IPs the Service's status shows."""
        obj = self.services.store.get(key)
        return [str(ip) for ip in service.ingress_ips(obj)] if obj else []

    def held(self, key: str) -> list[str]:
        return [str(ip) for ip in self.state.allocator.ips_of(key)]

    def condition(self, key: str) -> dict | None:
        conds = (self.services.store[key].get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == names.COND_SERVICE_ALLOCATED), None)


def svc(name: str, *, annotations: dict[str, str] | None = None, **spec) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "1",
                     "creationTimestamp": "2026-01-01T00:00:00Z", "annotations": annotations or {}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}], "ipFamilies": ["IPv4"],
                 "ipFamilyPolicy": "SingleStack", **spec},
    }


def writes(lines: list[str]) -> list[str]:
    """The lines that change the cluster or the allocator (not Events, not enqueues)."""
    return [line for line in lines if line.startswith(("metadata", "status", "release"))]


def in_order(lines: list[str], *expected: str) -> bool:
    """Whether the `expected` lines appear in `lines` in this order (others may come between)."""
    it = iter(lines)
    return all(any(line == e for line in it) for e in expected)


# -- a new Service ---------------------------------------------------------------------------


def test_a_new_service_gets_the_finalizer_with_its_pool_before_any_ip_shows_and_a_second_sync_writes_nothing():
    w = World({"lan": ["192.0.2.10-192.0.2.11"]})
    a = w.add(svc("a"))
    assert w.sync(a) == [
        # One write: the finalizer and the pool go on with the IP, so no IP shows without them.
        f"status ns/a: 192.0.2.10 [True Allocated] with +{FIN}, {FROM_POOL}=lan",
        "enqueue pool lan",
        "event ns/a Normal IPAllocated",
    ]
    assert w.sync(a) == []


def test_a_failed_write_shows_nothing_and_the_retry_gives_the_same_ip():
    # The finalizer, the annotation and the IP go in one write. The IP stays reserved for this
    # Service (no one else gets it) until a retry shows it; should the Service go away instead, its
    # sync finds it gone and releases it (gone-from-cache below).
    w = World({"lan": ["192.0.2.10-192.0.2.11"]})
    a, b = w.add(svc("a")), w.add(svc("b"))
    w.writer.fail_when("status ns/a")
    with pytest.raises(ApiException):
        w.sync(a)
    assert w.log[-1].endswith("-> 500")  # nothing written after the failed call
    assert w.shown(a) == [] and w.held(a) == ["192.0.2.10"]
    assert FIN not in (w.services.store[a]["metadata"].get("finalizers") or [])
    assert not any(line.startswith("event") for line in w.log)

    w.sync(b)  # meanwhile: another Service must not get what is reserved
    assert w.shown(b) == ["192.0.2.11"]
    w.sync(a)
    assert w.shown(a) == w.held(a) == ["192.0.2.10"]


# -- letting go --------------------------------------------------------------------------------


def deleted(obj: dict) -> None:
    obj["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"


def cluster_ip(obj: dict) -> None:
    obj["spec"]["type"] = "ClusterIP"


def other_class(obj: dict) -> None:
    obj["spec"]["loadBalancerClass"] = "example.com/other"


@pytest.mark.parametrize(("change", "expected"), [
    # A Service being deleted disappears with its finalizer: its status needs no clearing.
    pytest.param(deleted, [f"metadata ns/a: -{FIN}, -{FROM_POOL}", "release ns/a: 192.0.2.10"], id="deleted"),
    # Still there but no longer ours: our status goes first, then our finalizer and annotation.
    pytest.param(cluster_ip, ["status ns/a: -", f"metadata ns/a: -{FIN}, -{FROM_POOL}", "release ns/a: 192.0.2.10"],
                 id="type-changed"),
    pytest.param(other_class, ["status ns/a: -", f"metadata ns/a: -{FIN}, -{FROM_POOL}",
                               "release ns/a: 192.0.2.10"], id="class-changed"),
    pytest.param(None, ["release ns/a: 192.0.2.10"], id="gone-from-cache"),
])
def test_a_service_let_go_is_released_last_and_its_ip_goes_to_the_one_waiting(change, expected):
    w = World({"lan": ["192.0.2.10"]})
    a, b = w.add(svc("a")), w.add(svc("b"))
    w.sync(a)
    assert w.sync(b)[-1] == "event ns/b Warning AllocationFailed"  # the pool is exhausted: b waits
    if change is None:
        del w.services.store[a]  # e.g. its finalizer removed by hand
    else:
        w.edit(a, change)

    lines = w.sync(a)
    # The allocator lets the IP go only once no status of ours can show it any more.
    assert writes(lines) == expected
    assert in_order(lines, "release ns/a: 192.0.2.10", "enqueue ns/b")
    assert w.held(a) == [] and w.queue == [b]
    if a in w.services.store:
        left = w.services.store[a]
        assert FIN not in left["metadata"]["finalizers"] and FROM_POOL not in left["metadata"]["annotations"]
        assert w.shown(a) == [] and w.condition(a) is None
    w.drain()
    assert w.shown(b) == w.held(b) == ["192.0.2.10"]


def test_a_service_moved_to_another_pool_frees_its_ip_for_the_one_waiting():
    w = World({"lan": ["192.0.2.10"], "dmz": ["198.51.100.10"]})
    a, b = (w.add(svc(n, annotations={names.ANN_ADDRESS_POOL: "lan"})) for n in ("a", "b"))
    w.sync(a)
    w.sync(b)
    assert w.shown(a) == ["192.0.2.10"] and w.shown(b) == []
    w.edit(a, lambda o: o["metadata"]["annotations"].update({names.ANN_ADDRESS_POOL: "dmz"}))
    assert writes(w.sync(a)) == [f"status ns/a: 198.51.100.10 [True Allocated] with {FROM_POOL}=dmz"]
    assert w.queue == [b]
    w.drain()
    assert w.shown(b) == ["192.0.2.10"]


@pytest.mark.parametrize(("ours", "theirs"), [
    pytest.param(None, "example.com/other", id="another-class"),
    pytest.param("example.com/ours", None, id="no-class-when-we-have-one"),
    pytest.param("example.com/ours", "example.com/other", id="both-classes-differ"),
])
def test_a_service_of_another_class_is_left_alone(ours, theirs):
    w = World({"lan": ["192.0.2.10"]}, lb_class=ours)
    spec = {"loadBalancerClass": theirs} if theirs else {}
    a = w.add(svc("a", **spec))
    assert w.sync(a) == []
    assert w.held(a) == [] and w.services.store[a]["metadata"]["resourceVersion"] == "1"


# -- requests that cannot be met ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    pytest.param({"annotations": {names.ANN_LOAD_BALANCER_IPS: "nope"}}, id="not-an-ip"),
    pytest.param({"annotations": {names.ANN_LOAD_BALANCER_IPS: "192.0.2.10"}, "loadBalancerIP": "192.0.2.10"},
                 id="ip-asked-twice"),
    pytest.param({"annotations": {names.ANN_ADDRESS_POOL: " "}}, id="empty-pool-name"),
    pytest.param({"externalTrafficPolicy": "Nowhere"}, id="traffic-policy"),
    pytest.param({"ports": [{"protocol": "TCP"}]}, id="port-without-number"),
    pytest.param({"ipFamilies": ["IPv5"]}, id="no-known-family"),
    pytest.param({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
                  "annotations": {names.ANN_LOAD_BALANCER_IPS: "192.0.2.11"}}, id="dual-stack-half-requested"),
])
def test_an_invalid_request_is_reported_on_the_service_and_disturbs_no_other(bad):
    w = World({"lan": ["192.0.2.10-192.0.2.11"], "lan6": ["2001:db8::10-2001:db8::11"]})
    b = w.add(svc("b"))
    w.sync(b)
    before = copy.deepcopy(w.services.store[b])
    a = w.add(svc("a", **bad))

    lines = w.sync(a)
    assert lines == [f"status ns/a: - [False {service.REASON_INVALID_REQUEST}] with +{FIN}",
                     "event ns/a Warning AllocationFailed"]
    assert w.recorder.messages[-1].startswith(f"{service.REASON_INVALID_REQUEST}: ")
    assert w.held(a) == []
    assert w.services.store[b] == before and w.held(b) == ["192.0.2.10"]
    assert w.sync(a) == []  # reported once, not on every sync


def test_an_invalid_edit_keeps_the_ip_the_service_holds():
    w = World({"lan": ["192.0.2.10-192.0.2.11"]})
    a = w.add(svc("a"))
    w.sync(a)
    w.edit(a, lambda o: o["metadata"]["annotations"].update({names.ANN_LOAD_BALANCER_IPS: "nope"}))
    assert writes(w.sync(a)) == [f"status ns/a: 192.0.2.10 [False {service.REASON_INVALID_REQUEST}]"]
    assert w.held(a) == ["192.0.2.10"]


def dual(name: str, **extra) -> dict:
    return svc(name, ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack", **extra)


@pytest.mark.parametrize(("requested", "reason"), [
    pytest.param("192.0.2.11,2001:db8::99", allocator.NOT_IN_POOL, id="v6-outside-every-pool"),
    pytest.param("192.0.2.11,2001:db8::11", allocator.TAKEN, id="v6-held-by-another"),
])
def test_a_failed_require_dual_stack_change_keeps_what_the_service_had(requested, reason):
    w = World({"lan": ["192.0.2.10-192.0.2.12"], "lan6": ["2001:db8::10-2001:db8::11"]})
    a, b = w.add(dual("a")), w.add(svc("b", ipFamilies=["IPv6"]))
    w.sync(a)
    w.sync(b)
    assert w.shown(a) == ["192.0.2.10", "2001:db8::10"] and w.shown(b) == ["2001:db8::11"]
    w.edit(a, lambda o: o["metadata"]["annotations"].update({names.ANN_LOAD_BALANCER_IPS: requested}))

    lines = w.sync(a)
    assert writes(lines) == [f"status ns/a: 192.0.2.10,2001:db8::10 [False {reason}]"]
    assert lines[-1] == "event ns/a Warning AllocationFailed"
    assert w.held(a) == ["192.0.2.10", "2001:db8::10"]
    # The IPv4 half of the change was taken back: it is free for anyone.
    c = w.add(svc("c", annotations={names.ANN_LOAD_BALANCER_IPS: "192.0.2.11"}))
    w.sync(c)
    assert w.shown(c) == ["192.0.2.11"]


def test_a_sync_on_a_version_its_own_writes_replaced_writes_nothing():
    # The informer delivers the version of our metadata patch, then of our status write: a sync
    # in between would build a write on the first and fail with 409 (a second sync per Service,
    # when Services are created fast).
    w = World({"lan": ["192.0.2.10-192.0.2.11"]})
    a = w.add(svc("a"))
    versions = [copy.deepcopy(w.services.store[a])]
    patch = w.writer.patch_metadata

    def recorded(*args, **kw):
        written = patch(*args, **kw)
        versions.append(copy.deepcopy(written))
        return written

    w.writer.patch_metadata = recorded
    w.sync(a)
    latest = copy.deepcopy(w.services.store[a])
    for stale in versions:  # the informer lagging behind: the original, then our metadata patch
        w.services.store[a] = copy.deepcopy(stale)
        assert w.sync(a) == []
    w.services.store[a] = latest  # caught up: nothing to do either
    assert w.sync(a) == []
    w.edit(a, lambda o: o["metadata"]["annotations"].update({names.ANN_LOAD_BALANCER_IPS: "192.0.2.11"}))
    assert writes(w.sync(a))[-1] == "status ns/a: 192.0.2.11 [True Allocated]"  # a user's edit is no replay


# -- start-up ---------------------------------------------------------------------------------


def test_ips_shown_in_status_are_adopted_before_anything_new_is_allocated():
    w = World({"lan": ["192.0.2.10-192.0.2.11"]})
    old = svc("old", annotations={FROM_POOL: "lan"})
    old["metadata"]["finalizers"] = [FIN]
    old["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}]}, "conditions": [
        {"type": names.COND_SERVICE_ALLOCATED, "status": "True", "reason": allocation.REASON_ALLOCATED,
         "message": "assigned 192.0.2.10 from pool lan", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    o, new = w.add(old), w.add(svc("new"))
    w.reconciler.rebuild(w.services.objects())
    w.sync(new)
    assert w.shown(new) == ["192.0.2.11"]
    assert w.sync(o) == []  # the adopted Service is already what it should be


# -- adoption: Services another implementation numbered (MetalLB) become ours --------------------


def numbered_elsewhere(name: str, ip: str, created: str = "2026-01-01T00:00:00Z", **kw) -> dict:
    """A Service as MetalLB leaves it: its IP in the status, MetalLB's annotation, none of ours."""
    obj = svc(name, **kw)
    obj["metadata"]["creationTimestamp"] = created
    obj["metadata"]["annotations"]["metallb.io/ip-allocated-from-pool"] = "lan"
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}
    return obj


def test_a_service_numbered_elsewhere_keeps_its_ip_and_its_status_ip_is_never_rewritten():
    w = World({"lan": ["192.0.2.10-192.0.2.12"]})
    a = w.add(numbered_elsewhere("a", "192.0.2.11"))
    lines = w.sync(a)
    assert writes(lines) == [
        # The condition only (the same IP), and from now on the agents announce it.
        f"status ns/a: 192.0.2.11 [True Allocated] with +{FIN}, {FROM_POOL}=lan",
    ]
    assert "event ns/a Normal IPAdopted" in lines and "event ns/a Normal IPAllocated" not in lines
    assert w.held(a) == ["192.0.2.11"] and w.sync(a) == []


def test_an_adoption_survives_a_restart_halfway_and_nothing_new_takes_an_adopted_ip():
    w = World({"lan": ["192.0.2.10-192.0.2.13"]})
    olds = [w.add(numbered_elsewhere(n, ip)) for n, ip in (("a", "192.0.2.12"), ("b", "192.0.2.10"))]
    w.reconciler.rebuild(w.services.objects())
    w.sync(olds[0])  # a is adopted, then the controller dies before b's turn
    fresh = w.add(svc("new"))

    restarted = World({"lan": ["192.0.2.10-192.0.2.13"]})
    restarted.services.store = w.services.store
    restarted.reconciler.rebuild(restarted.services.objects())
    restarted.sync(fresh)  # the newcomer comes first, and must not get b's IP
    for key in olds:
        restarted.sync(key)
    assert [restarted.shown(k) for k in (*olds, fresh)] == [["192.0.2.12"], ["192.0.2.10"], ["192.0.2.11"]]
    assert all(restarted.condition(k)["status"] == "True" for k in (*olds, fresh))


def test_two_services_shown_one_ip_they_may_not_share_neither_moves_and_the_newcomer_is_told():
    w = World({"lan": ["192.0.2.10-192.0.2.12"]})
    ours, theirs = w.add(svc("ours")), w.add(numbered_elsewhere("theirs", "192.0.2.10"))
    w.sync(ours)
    assert w.shown(ours) == ["192.0.2.10"]
    w.sync(theirs)
    assert w.shown(ours) == w.shown(theirs) == ["192.0.2.10"] and w.held(theirs) == []
    cond = w.condition(theirs)
    assert cond["status"] == "False" and cond["reason"] == "Taken" and "ns/ours" in cond["message"]
    assert FROM_POOL not in w.services.store[theirs]["metadata"]["annotations"]  # so no agent announces it
    # The user resolves it by asking for another IP: now it moves, because it was asked to.
    w.edit(theirs, lambda o: o["metadata"]["annotations"].update({"metallb.io/loadBalancerIPs": "192.0.2.12"}))
    w.sync(theirs)
    assert w.shown(theirs) == ["192.0.2.12"] and w.shown(ours) == ["192.0.2.10"]


def test_an_unreadable_newcomer_keeps_what_it_shows_and_one_that_gave_its_ip_up_shows_nothing():
    w = World({"lan": ["192.0.2.10-192.0.2.12"]})
    bad = {"metallb.io/loadBalancerIPs": "not-an-ip"}
    newcomer = w.add(numbered_elsewhere("newcomer", "192.0.2.12", annotations=bad))
    w.sync(newcomer)
    assert w.shown(newcomer) == ["192.0.2.12"] and w.condition(newcomer)["reason"] == "InvalidRequest"
    # Two sharing; one's edit makes it clash with the other AND is unreadable: it gives the IP up.
    share = {names.ANN_ALLOW_SHARED_IP: "k"}
    a, b = w.add(svc("a", annotations=dict(share))), w.add(svc("b", annotations=share, ports=[{"port": 81}]))
    w.sync(a)
    w.sync(b)
    assert w.shown(a) == w.shown(b) == ["192.0.2.10"]
    w.edit(a, lambda o: (o["spec"].update(ports=[{"port": 81}]),
                         o["metadata"]["annotations"].update({names.ANN_LOAD_BALANCER_IPS: "bad"})))
    w.sync(a)
    assert w.shown(a) == [] and w.held(a) == [] and w.shown(b) == ["192.0.2.10"]


def test_metallbs_annotation_disagreeing_with_ours_is_reported_and_ours_wins():
    w = World({"lan": ["192.0.2.10-192.0.2.11"], "dmz": ["198.51.100.10"]})
    a = w.add(svc("a", annotations={names.ANN_ADDRESS_POOL: "dmz", "metallb.io/address-pool": "lan"}))
    lines = w.sync(a)
    assert w.shown(a) == ["198.51.100.10"] and "event ns/a Warning AnnotationIgnored" in lines
    assert "metallb.io/address-pool='lan' is ignored" in w.condition(a)["message"]
    assert w.sync(a) == []  # reported once, not at every sync


# -- what others wrote -------------------------------------------------------------------------


def test_an_ingress_entry_someone_else_wrote_survives_our_writes():
    # A hostname-only entry (another component's, or a DNS name an operator set) is not ours to drop.
    theirs = {"hostname": "lb.example.com"}
    w = World({"lan": ["192.0.2.10"]})
    obj = svc("a")
    obj["status"] = {"loadBalancer": {"ingress": [theirs]}}
    a = w.add(obj)
    w.sync(a)
    assert w.services.store[a]["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.10", "ipMode": "VIP"}, theirs]
    w.edit(a, cluster_ip)
    w.sync(a)
    assert w.services.store[a]["status"]["loadBalancer"]["ingress"] == [theirs]
    assert w.held(a) == []


# -- address conflicts the agents report ------------------------------------------------------


def record(node: str, *conflicts: dict) -> dict:
    return {"metadata": {"name": node}, "status": {"conflicts": list(conflicts)}}


def conflict(ip: str, kind: str, services: tuple[str, ...] = ("ns/a",), mac: str = "02:00:00:00:00:3e") -> dict:
    return {"ip": ip, "mac": mac, "interface": "eth0", "kind": kind, "since": "2026-01-01T00:00:00Z",
            "services": list(services)}


IP_A = "192.0.2.10"
CONFLICT_CASES = [
    ("no-record-no-condition", [], None),
    ("in-use-found-by-the-probe", [record("n1", conflict(IP_A, "InUse"))], "AddressInUse"),
    ("claimed-while-announced", [record("n2", conflict(IP_A, "Claimed"))], "AddressClaimed"),
    ("in-use-wins-over-claimed", [record("n1", conflict(IP_A, "Claimed")), record("n2", conflict(IP_A, "InUse"))],
     "AddressInUse"),
    ("another-ip-is-not-this-services", [record("n1", conflict("192.0.2.11", "InUse"))], None),
    ("the-same-ip-for-another-service-is-not-this-services",
     [record("n1", conflict(IP_A, "InUse", services=("ns/b",)))], None),
    ("a-conflict-naming-no-service-counts-for-the-holder", [record("n1", conflict(IP_A, "InUse", services=()))],
     "AddressInUse"),
    ("a-malformed-entry-is-skipped", [{"metadata": {"name": "n1"}, "status": {"conflicts": ["junk", None]}}], None),
]


@pytest.mark.parametrize(("records", "reason"), [c[1:] for c in CONFLICT_CASES], ids=[c[0] for c in CONFLICT_CASES])
def test_address_conflict_condition_from_the_records(records: list[dict], reason: str | None) -> None:
    from leifur.controller.reconcile import address_conflict

    found = address_conflict("ns/a", [IP_A], records)
    assert (found[0] if found else None) == reason
    if found:
        assert IP_A in found[1] and "02:00:00:00:00:3e" in found[1]
        assert any(r["metadata"]["name"] in found[1] for r in records)


def test_a_reported_conflict_sets_the_condition_and_its_end_removes_it():
    w = World({"lan": ["192.0.2.10-192.0.2.11"]})
    a = w.add(svc("a"))
    w.sync(a)
    w.records.store["n1"] = record("n1", conflict(IP_A, "InUse"))
    assert writes(w.sync(a)) == ["status ns/a: 192.0.2.10 [True Allocated]"]
    cond = next(c for c in w.services.store[a]["status"]["conditions"] if c["type"] == names.COND_ADDRESS_CONFLICT)
    assert cond["status"] == "True" and "node n1" in cond["message"] and IP_A in cond["message"]
    assert w.shown(a) == [IP_A], "a conflict changes no allocation"
    assert w.sync(a) == []
    w.records.store["n1"] = record("n1")
    assert writes(w.sync(a)) == ["status ns/a: 192.0.2.10 [True Allocated]"]
    assert [c["type"] for c in w.services.store[a]["status"]["conditions"]] == [names.COND_SERVICE_ALLOCATED]
