"""Lease-based leader election: one leader, prompt hand-over on release, self-demotion when renewals fail."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from leifur.kube import timestamps
from leifur.kube.client import request
from leifur.kube.leader import LeaderElector
from leifur.model.settings import LeaderSettings

pytestmark = pytest.mark.controlplane

LEASE, RENEW, RETRY = 3.0, 2.0, 0.2
FAST = LeaderSettings(lease_duration=LEASE, renew_deadline=RENEW, retry_period=RETRY)
# Where a test tells "at the next retry" from "after the lease": ten times apart, whatever the load.
LONG = LeaderSettings(lease_duration=30.0, renew_deadline=20.0, retry_period=RETRY)


class Candidate:
    """An elector plus a record of its callbacks (monotonic times)."""

    def __init__(self, api_client, namespace: str, identity: str, settings: LeaderSettings = FAST,
                 **kwargs) -> None:
        self.identity = identity
        self.started: list[float] = []
        self.stopped: list[float] = []
        self.elector = LeaderElector(
            api_client, namespace, "leifur-test", identity, settings,
            on_started_leading=lambda: self.started.append(time.monotonic()),
            on_stopped_leading=lambda: self.stopped.append(time.monotonic()), **kwargs)


class Sampler:
    """Samples is_leader() of every candidate every 20 ms; remembers any moment with two leaders."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self.both: list[float] = []
        self.leading: dict[str, list[float]] = {c.identity: [] for c in candidates}  # when each said yes
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            # Taken before asking: a yes means the elector's own deadline had not passed by then.
            now = time.monotonic()
            leaders = [c.identity for c in self.candidates if c.elector.is_leader()]
            for identity in leaders:
                self.leading[identity].append(now)
            self.samples += 1
            if len(leaders) > 1:
                self.both.append(time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


@pytest.fixture
def settings() -> LeaderSettings:
    return FAST


@pytest.fixture
def pair(api_client, namespace, settings) -> Iterator[tuple[Candidate, Candidate, Sampler]]:
    a, b = Candidate(api_client, namespace, "a", settings), Candidate(api_client, namespace, "b", settings)
    sampler = Sampler([a, b])
    a.elector.start()
    b.elector.start()
    yield a, b, sampler
    sampler.stop()
    for c in (a, b):
        c.elector.stop(release=False, timeout=10)
    assert sampler.samples > 0
    assert not sampler.both, f"two leaders at once at {len(sampler.both)} samples"


def wait_until(cond: Callable[[], bool], timeout: float) -> float:
    """Seconds until cond() held; fails after timeout."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - start


def leader_of(*candidates: Candidate) -> list[Candidate]:
    return [c for c in candidates if c.elector.is_leader()]


def lease(api_client, namespace: str) -> dict:
    return request(api_client, "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/leifur-test")


@pytest.mark.parametrize("settings", [LONG])
def test_exactly_one_leads_and_release_hands_over_promptly(api_client, namespace, pair):
    a, b, _ = pair
    wait_until(lambda: len(leader_of(a, b)) == 1, 10)
    time.sleep(1.0)  # several renewals: still the same single leader
    (first,) = leader_of(a, b)
    other = b if first is a else a
    wait_until(lambda: bool(first.started), 5)  # on_started_leading runs in a thread of its own
    assert len(first.started) == 1 and not first.stopped
    assert not other.started
    assert other.elector.leader_identity() == first.identity == first.elector.leader_identity()
    spec = lease(api_client, namespace)["spec"]
    assert spec["holderIdentity"] == first.identity and spec["leaseDurationSeconds"] == LONG.lease_duration

    stopping = time.monotonic()
    first.elector.stop(release=True)
    assert not first.elector.is_leader()
    assert len(first.stopped) == 1
    handover = wait_until(other.elector.is_leader, LONG.lease_duration / 2)
    # Released: the other takes it at its next retry, not after waiting out the 30 s lease.
    assert handover < LONG.lease_duration / 2, handover
    wait_until(lambda: bool(other.started), 5)
    assert other.started[0] >= stopping
    spec = lease(api_client, namespace)["spec"]
    assert spec["holderIdentity"] == other.identity
    assert spec["leaseTransitions"] >= 1


def test_without_release_the_other_waits_for_the_lease_to_expire(api_client, namespace, pair):
    a, b, _ = pair
    wait_until(lambda: len(leader_of(a, b)) == 1, 10)
    (first,) = leader_of(a, b)
    other = b if first is a else a

    first.elector.stop(release=False)
    held = lease(api_client, namespace)["spec"]
    assert held["holderIdentity"] == first.identity
    wait_until(other.elector.is_leader, LEASE + 10)
    # The other judges expiry by its own clock from the last change it saw, the final renewal: it
    # takes over no earlier than a lease duration after it (both times written on this host).
    taken = lease(api_client, namespace)["spec"]
    assert taken["holderIdentity"] == other.identity
    waited = timestamps.parse(taken["acquireTime"]) - timestamps.parse(held["renewTime"])
    assert waited.total_seconds() >= LEASE - 0.05, (held, taken)


def test_a_leader_that_cannot_renew_stops_leading_within_the_deadline(control_plane, api_client, namespace, pair):
    a, b, sampler = pair
    wait_until(lambda: len(leader_of(a, b)) == 1, 10)
    (first,) = leader_of(a, b)
    other = b if first is a else a

    try:
        control_plane.stop_component("kube-apiserver", grace=3)
        gone = time.monotonic()
        wait_until(lambda: bool(first.stopped), RENEW + 10)
        assert not first.elector.is_leader()
        assert not other.elector.is_leader()  # nobody can acquire while the API is down
    finally:
        control_plane.start_component("kube-apiserver")
        control_plane.wait_ready()
    # Renewals may still succeed during the API server's graceful shutdown, so count from its exit:
    # the leader never says so once a renew deadline has passed without a renewal.
    late = [t - gone for t in sampler.leading[first.identity] if t > gone + RENEW]
    assert not late, f"still leading {late} s after the API server went"
    assert len(first.started) == 1

    # After losing the lease the elector is done (like client-go); the other candidate takes over.
    first.elector._thread.join(5)
    assert not first.elector._thread.is_alive()
    wait_until(other.elector.is_leader, LEASE + 10)
    assert lease(api_client, namespace)["spec"]["holderIdentity"] == other.identity


def test_rejoin_campaigns_again_after_losing(control_plane, api_client, namespace):
    c = Candidate(api_client, namespace, "solo", rejoin=True)
    c.elector.start()
    try:
        wait_until(c.elector.is_leader, 10)
        try:
            control_plane.stop_component("kube-apiserver", grace=3)
            wait_until(lambda: bool(c.stopped), RENEW + 5)
        finally:
            control_plane.start_component("kube-apiserver")
            control_plane.wait_ready()
        # Still the holder in the record: re-acquires without waiting out the lease. On a loaded
        # machine the API server's first answers after its restart can be slow enough to lose the
        # lease once more (renew deadline 2 s); each loss is followed by another campaign.
        wait_until(c.elector.is_leader, 10)
        wait_until(lambda: len(c.started) >= 2, 5)
    finally:
        c.elector.stop(release=True, timeout=10)
    # Every start was matched by a stop, the last one by stop() itself.
    assert len(c.stopped) == len(c.started) >= 2
    spec = lease(api_client, namespace)["spec"]
    assert not spec.get("holderIdentity") and spec["leaseDurationSeconds"] == 1


def test_a_blocking_start_callback_does_not_stop_renewals(api_client, namespace):
    release = threading.Event()
    entered = threading.Event()

    def run_the_controller() -> None:  # e.g. wait for caches, then run workers until told to stop
        entered.set()
        release.wait(60)

    elector = LeaderElector(api_client, namespace, "leifur-blocking", "slow", FAST,
                            on_started_leading=run_the_controller)
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/leifur-blocking"
    elector.start()
    try:
        assert entered.wait(10)
        # Renewals go on while the callback blocks: the Lease's renewTime moves, twice.
        seen = {request(api_client, "GET", path)["spec"]["renewTime"]}
        deadline = time.monotonic() + RENEW + 10
        while len(seen) < 3:
            assert time.monotonic() < deadline, f"renewTime moved only to {sorted(seen)}"
            time.sleep(RETRY)
            seen.add(request(api_client, "GET", path)["spec"]["renewTime"])
        assert elector.is_leader()
    finally:
        release.set()
        elector.stop()


def test_stop_from_the_stopped_callback_keeps_the_first_decision(api_client, namespace):
    # A controller whose on_stopped_leading shuts everything down, the elector included.
    holder: list[LeaderElector] = []
    elector = LeaderElector(api_client, namespace, "leifur-test", "reentrant", FAST,
                            on_stopped_leading=lambda: holder[0].stop(release=False))
    holder.append(elector)
    elector.start()
    wait_until(elector.is_leader, 10)
    elector.stop(release=True)
    assert not elector._thread.is_alive()
    spec = lease(api_client, namespace)["spec"]
    assert not spec.get("holderIdentity")  # released, as the first stop() asked


def test_invalid_durations_are_refused(api_client):
    with pytest.raises(ValueError):
        LeaderElector(api_client, "default", "x", "me", LeaderSettings(lease_duration=2, renew_deadline=2))
    with pytest.raises(ValueError):
        LeaderElector(api_client, "default", "x", "", FAST)
