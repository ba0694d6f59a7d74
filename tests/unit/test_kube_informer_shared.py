"""Informer.shared hands out the stored objects without copying; what it handed out never changes."""

from __future__ import annotations

from leifur.kube.informer import Informer


def event(kind: str, name: str, rv: str, **spec: object) -> dict:
    return {"type": kind, "object": {"kind": "Service", "apiVersion": "v1",
                                     "metadata": {"namespace": "a", "name": name, "resourceVersion": rv},
                                     "spec": dict(spec)}}


def test_a_shared_list_stays_as_it_was_taken():
    inf = Informer(None, "/api/v1/services", "services")  # type: ignore[arg-type]  # no I/O here
    inf._handle_event(event("ADDED", "web", "1", type="ClusterIP"))
    inf._handle_event(event("ADDED", "db", "2"))
    before = inf.shared()
    [web] = [o for o in before if o["metadata"]["name"] == "web"]
    inf._handle_event(event("MODIFIED", "web", "3", type="LoadBalancer"))
    inf._handle_event(event("DELETED", "db", "4"))
    # The list taken before holds the objects as they were: changes replace, never edit.
    assert web["spec"] == {"type": "ClusterIP"} and len(before) == 2
    [now] = inf.shared()
    assert now["spec"] == {"type": "LoadBalancer"}
    # And no copy was made: the same object as the store's.
    assert now is inf.shared()[0]
    assert now is not inf.objects()[0]
