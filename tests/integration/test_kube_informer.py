"""The informer against a real API server: handlers and store follow changes, relists diff, outages back off."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from leifur.kube.client import list_all, request
from leifur.kube.informer import Informer
from leifur.kube.kept import kept
from leifur.model.objects import key_of
from leifur_dev.cluster import create_test_crd

pytestmark = pytest.mark.controlplane

GROUP, VERSION, PLURAL, KIND = "kubetest.leifur.io", "v1", "gizmos", "Gizmo"


class Recorder:
    """Collects handler calls as (what, key) and lets a test wait for one."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.calls: list[tuple[str, str, dict]] = []
        self._cond = threading.Condition()

    def _record(self, what: str, obj: dict) -> None:
        key = key_of(obj)
        if key.startswith(self.prefix):
            with self._cond:
                self.calls.append((what, key, obj))
                self._cond.notify_all()

    def attach(self, informer: Informer) -> None:
        informer.add_handler(on_add=lambda o: self._record("add", o),
                             on_update=lambda old, new: self._record("update", new),
                             on_delete=lambda o: self._record("delete", o))

    def seen(self) -> list[tuple[str, str]]:
        with self._cond:
            return [(w, k) for w, k, _ in self.calls]

    def wait_for(self, what: str, key: str, timeout: float = 20.0,
                 check: Callable[[dict], bool] = lambda o: True) -> dict:
        with self._cond:
            found: list[dict] = []

            def hit() -> bool:
                found[:] = [o for w, k, o in self.calls if (w, k) == (what, key) and check(o)]
                return bool(found)

            if not self._cond.wait_for(hit, timeout):
                raise AssertionError(f"no {what} of {key} within {timeout}s; seen {self.seen()}")
            return found[-1]

    def clear(self) -> None:
        with self._cond:
            self.calls.clear()


def service(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
            "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def create_service(api_client, namespace: str, name: str, **labels: str) -> dict:
    return request(api_client, "POST", f"/api/v1/namespaces/{namespace}/services", body=service(name, **labels))


def keys_in(inf: Informer, namespace: str) -> list[str]:
    return sorted(k for k in inf.keys() if k.startswith(f"{namespace}/"))


@pytest.fixture
def informers() -> Iterator[list[Informer]]:
    """Informers a test starts; stopped even when it fails."""
    started: list[Informer] = []
    yield started
    for inf in started:
        inf.stop()


def start_informer(informers: list[Informer], inf: Informer, recorder: Recorder | None = None) -> Informer:
    if recorder is not None:
        recorder.attach(inf)
    inf.start()
    informers.append(inf)
    assert inf.wait_for_sync(20), "informer never synced"
    return inf


def restart_api_server(control_plane) -> None:
    # A short grace: graceful shutdown would wait for open watches for the full default.
    control_plane.stop_component("kube-apiserver", grace=3)
    control_plane.start_component("kube-apiserver")
    control_plane.wait_ready()


def test_store_and_handlers_follow_adds_updates_and_deletes(api_client, namespace, informers, caplog):
    create_service(api_client, namespace, "before")
    rec = Recorder(f"{namespace}/")
    inf = Informer(api_client, "/api/v1/services", "services")
    # A handler that raises is logged and does not stop the others or the informer.
    inf.add_handler(on_add=lambda o: 1 / 0)
    inf = start_informer(informers, inf, rec)
    assert inf.has_synced()

    rec.wait_for("add", f"{namespace}/before")
    stored = inf.get(f"{namespace}/before")
    # Items of a LIST carry no kind/apiVersion; the informer fills them in.
    assert (stored["apiVersion"], stored["kind"]) == ("v1", "Service")
    assert "default/kubernetes" in set(inf.keys())

    create_service(api_client, namespace, "web")
    added = rec.wait_for("add", f"{namespace}/web")
    assert added["spec"]["ports"][0]["port"] == 80

    request(api_client, "PATCH", f"/api/v1/namespaces/{namespace}/services/web",
            body={"metadata": {"labels": {"tier": "front"}}}, content_type="application/merge-patch+json")
    rec.wait_for("update", f"{namespace}/web", check=lambda o: o["metadata"]["labels"].get("tier") == "front")
    assert inf.get(f"{namespace}/web")["metadata"]["labels"] == {"tier": "front"}

    request(api_client, "DELETE", f"/api/v1/namespaces/{namespace}/services/web")
    rec.wait_for("delete", f"{namespace}/web")
    assert inf.get(f"{namespace}/web") is None
    assert f"{namespace}/web" not in set(inf.keys())
    assert {key_of(o) for o in inf.objects()} == set(inf.keys())

    assert any("event handler" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_listers_return_copies_and_late_handlers_get_a_replay(api_client, namespace, informers):
    create_service(api_client, namespace, "one")
    inf = start_informer(informers, Informer(api_client, f"/api/v1/namespaces/{namespace}/services", "services-ns"))
    key = f"{namespace}/one"
    assert inf.keys() == [key]

    mine = inf.get(key)
    mine["metadata"]["labels"] = {"changed": "locally"}
    inf.objects()[0]["spec"]["ports"].clear()
    again = inf.get(key)
    assert again["metadata"].get("labels") is None
    assert again["spec"]["ports"]

    late = Recorder()
    late.attach(inf)
    assert late.seen() == [("add", key)]


def test_the_cache_holds_no_managed_fields(api_client, namespace, informers):
    """managedFields (who set which field) is read by no one and was a large share of the
    controller's memory at 5,000 Services: neither a LIST nor a watch event brings it into the
    store, the handlers or the listers' copies; everything else is kept."""
    created = create_service(api_client, namespace, "listed", tier="front")
    assert created["metadata"]["managedFields"]  # the API server does record them
    rec = Recorder(f"{namespace}/")
    inf = start_informer(informers, Informer(api_client, f"/api/v1/namespaces/{namespace}/services",
                                             "services-trim"), rec)
    create_service(api_client, namespace, "watched")
    request(api_client, "PATCH", f"/api/v1/namespaces/{namespace}/services/watched",
            body={"metadata": {"labels": {"tier": "back"}}}, content_type="application/merge-patch+json")
    rec.wait_for("update", f"{namespace}/watched", check=lambda o: o["metadata"].get("labels") == {"tier": "back"})

    for key in (f"{namespace}/listed", f"{namespace}/watched"):
        stored = inf.get(key)
        assert "managedFields" not in stored["metadata"]
        assert stored["metadata"]["resourceVersion"] and stored["spec"]["ports"]
    assert inf.get(f"{namespace}/listed")["metadata"]["labels"] == {"tier": "front"}
    assert inf.get(f"{namespace}/watched")["metadata"]["labels"] == {"tier": "back"}
    assert not any("managedFields" in o["metadata"] for _, _, o in rec.calls)
    assert not any("managedFields" in o["metadata"] for o in inf.objects())


def test_cluster_scoped_custom_objects(api_client, gizmo_crd, informers):
    path = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
    rec = Recorder("g-")
    inf = start_informer(informers, Informer(api_client, path, PLURAL), rec)

    request(api_client, "POST", path, body={"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                                            "metadata": {"name": "g-one"}, "spec": {"size": 1}})
    obj = rec.wait_for("add", "g-one")  # cluster-scoped: the key is the bare name
    assert obj["kind"] == KIND and "namespace" not in obj["metadata"]
    request(api_client, "PATCH", f"{path}/g-one", body={"spec": {"size": 2}},
            content_type="application/merge-patch+json")
    rec.wait_for("update", "g-one", check=lambda o: o["spec"]["size"] == 2)
    assert inf.get("g-one")["spec"]["size"] == 2
    request(api_client, "DELETE", f"{path}/g-one")
    rec.wait_for("delete", "g-one")
    assert inf.get("g-one") is None


def test_a_watch_that_ends_is_reopened_from_the_last_resource_version(api_client, namespace, informers):
    rec = Recorder(f"{namespace}/")
    # The server ends each watch after ~1 s.
    inf = start_informer(informers, Informer(api_client, f"/api/v1/namespaces/{namespace}/services", "svc-short",
                                             watch_timeout=1), rec)
    deadline = time.monotonic() + 20
    while inf.watch_count < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert inf.watch_count >= 3
    create_service(api_client, namespace, "late")
    rec.wait_for("add", f"{namespace}/late")
    assert inf.list_count == 1  # resumed each time, never needed a new LIST
    # Each reopen is one request; nothing retried in between.
    assert inf.connect_attempts <= inf.watch_count + 2


def test_relist_after_expiry_reports_what_changed_while_disconnected(control_plane, api_client, namespace,
                                                                     informers):
    for name in ("gone", "changed", "same"):
        create_service(api_client, namespace, name)
    rec = Recorder(f"{namespace}/")
    inf = start_informer(informers, Informer(api_client, "/api/v1/services", "svc-relist"), rec)
    rec.wait_for("add", f"{namespace}/same")
    relists_before = REGISTRY.get_sample_value("leifur_informer_relists_total", {"resource": "svc-relist"}) or 0

    inf.pause()
    request(api_client, "DELETE", f"/api/v1/namespaces/{namespace}/services/gone")
    request(api_client, "PATCH", f"/api/v1/namespaces/{namespace}/services/changed",
            body={"metadata": {"labels": {"v": "2"}}}, content_type="application/merge-patch+json")
    create_service(api_client, namespace, "new")
    # A restarted API server's watch cache starts at the current revision: our resourceVersion
    # is now too old to resume from (410 Gone), exactly as after a long disconnect.
    try:
        restart_api_server(control_plane)
    finally:
        rec.clear()
        inf.resume()

    rec.wait_for("delete", f"{namespace}/gone")
    rec.wait_for("update", f"{namespace}/changed", check=lambda o: o["metadata"]["labels"] == {"v": "2"})
    rec.wait_for("add", f"{namespace}/new")
    assert inf.list_count == 2
    # A LIST attempt that fails right after the restart counts as a relist too; list_count above
    # says exactly one more completed.
    assert REGISTRY.get_sample_value("leifur_informer_relists_total", {"resource": "svc-relist"}) >= relists_before + 1
    # Unchanged objects are not reported again.
    assert (("update", f"{namespace}/same") not in rec.seen()) and (("add", f"{namespace}/same") not in rec.seen())
    assert keys_in(inf, namespace) == [
        f"{namespace}/changed", f"{namespace}/new", f"{namespace}/same"]


def test_api_server_outage_backs_off_and_recovers(control_plane, api_client, namespace, informers):
    create_service(api_client, namespace, "old")
    rec = Recorder(f"{namespace}/")
    inf = start_informer(informers, Informer(api_client, "/api/v1/services", "svc-outage", request_timeout=3), rec)
    rec.wait_for("add", f"{namespace}/old")

    down = 6.0
    # Counted from before the stop: the watch breaks, and the backoff starts, as soon as the API
    # server gets SIGTERM, however long its graceful shutdown takes on a loaded machine.
    attempts_before = inf.connect_attempts
    try:
        control_plane.stop_component("kube-apiserver", grace=3)
        time.sleep(down)
        attempts_while_down = inf.connect_attempts - attempts_before
    finally:
        control_plane.start_component("kube-apiserver")
        control_plane.wait_ready()
    # Backoff 0.2, 0.4, 0.8, 1.6, 3.2 (+-20%): about 5 attempts in 6 to 9 s. A tight loop makes thousands.
    assert 2 <= attempts_while_down <= 10, attempts_while_down
    errors = REGISTRY.get_sample_value("leifur_informer_watch_errors_total", {"resource": "svc-outage"})
    assert errors and errors >= 2

    create_service(api_client, namespace, "new")
    request(api_client, "DELETE", f"/api/v1/namespaces/{namespace}/services/old")
    # The longest backoff step is 5 s (+20%), then a relist (410) and a watch.
    rec.wait_for("add", f"{namespace}/new", timeout=30)
    rec.wait_for("delete", f"{namespace}/old", timeout=30)
    server = request(api_client, "GET", f"/api/v1/namespaces/{namespace}/services")
    assert keys_in(inf, namespace) == sorted(
        f"{namespace}/{s['metadata']['name']}" for s in server["items"])


def test_stop_is_prompt_and_final(api_client, informers):
    inf = start_informer(informers, Informer(api_client, "/api/v1/namespaces", "namespaces"))
    deadline = time.monotonic() + 10
    while inf.watch_count < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # let the watch sit in a blocking read
    started = time.monotonic()
    inf.stop()
    assert time.monotonic() - started < 2
    assert not inf._thread.is_alive()
    assert "default" in set(inf.keys())  # the store stays readable after stop


@pytest.fixture(scope="module")
def gizmo_crd(api_client) -> Iterator[None]:
    name = create_test_crd(api_client, GROUP, VERSION, PLURAL, KIND)
    yield
    client.ApiextensionsV1Api(api_client).delete_custom_resource_definition(name)


def test_list_all_reads_every_page_and_keeps_what_keep_returns(api_client, namespace):
    """The controller's rebuild LIST: page by page, each item through `keep` (here: the cache's
    form, without managedFields), none missed or repeated across pages."""
    names = [f"cm-{i}" for i in range(7)]
    for name in names:
        request(api_client, "POST", f"/api/v1/namespaces/{namespace}/configmaps",
                body={"metadata": {"name": name}, "data": {"k": "v"}})
    kept_calls: list[str] = []

    def keep(obj: dict) -> dict:
        kept_calls.append(obj["metadata"]["name"])
        return kept(obj)

    items = list_all(api_client, f"/api/v1/namespaces/{namespace}/configmaps", keep=keep, page_size=3)
    assert sorted(o["metadata"]["name"] for o in items) == names
    assert sorted(kept_calls) == names
    assert all("managedFields" not in o["metadata"] and o["data"] == {"k": "v"} for o in items)
