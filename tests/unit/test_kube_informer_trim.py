"""The informer's cache without metadata.managedFields and with its keys and short strings
shared, from a LIST and from watch events (the API is faked: the informer's request function
and its event handling are driven directly)."""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes import client

from leifur.kube import informer as informer_module
from leifur.kube.informer import Informer

MANAGED = [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:ports": {}}}}]


def svc(name: str, rv: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "annotations": {"a": "b"},
                         "managedFields": copy.deepcopy(MANAGED)},
            "spec": {"type": "LoadBalancer"}}


@pytest.fixture
def inf(monkeypatch) -> Informer:
    body = {"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "10"},
            "items": [svc("listed", "5")]}
    monkeypatch.setattr(informer_module, "request", lambda *a, **kw: copy.deepcopy(body))
    i = Informer(client.ApiClient(), "/api/v1/services", "services-unit")
    i.seen = []  # type: ignore[attr-defined]
    i.add_handler(lambda o: i.seen.append(o), lambda _old, new: i.seen.append(new), i.seen.append)
    i._list_and_replace()
    return i


def test_listed_and_watched_objects_are_stored_without_managed_fields(inf):
    assert inf.get("ns/listed")["kind"] == "Service"  # filled in from the list, as before
    inf._handle_event({"type": "ADDED", "object": svc("watched", "11")})
    inf._handle_event({"type": "MODIFIED", "object": svc("listed", "12")})
    for key in ("ns/listed", "ns/watched"):
        meta = inf.get(key)["metadata"]
        assert "managedFields" not in meta
        # Nothing else goes: the reconciles read annotations and guard writes with the resourceVersion.
        assert meta["annotations"] == {"a": "b"} and meta["resourceVersion"]
    assert [o["metadata"]["name"] for o in inf.seen] == ["listed", "watched", "listed"]
    assert not any("managedFields" in o["metadata"] for o in inf.seen)
    assert inf.resource_version == "12"


def test_a_deleted_object_reaches_its_handler_without_managed_fields(inf):
    inf._handle_event({"type": "DELETED", "object": svc("listed", "13")})
    assert inf.get("ns/listed") is None
    assert "managedFields" not in inf.seen[-1]["metadata"]


def decoded(obj: dict) -> dict:
    """As the API answer's JSON decoding makes it: every string a copy of its own."""
    return json.loads(json.dumps(obj))


def test_stored_objects_share_their_keys_and_short_strings_and_keep_their_content(inf):
    long = "x" * 200
    a, b = svc("a", "20"), svc("b", "21")
    for s in (a, b):
        s["status"] = {"conditions": [{"type": "Ready", "message": long}]}
        s["spec"]["ipFamilies"] = ["IPv6"]
    inf._handle_event({"type": "ADDED", "object": decoded(a)})
    inf._handle_event({"type": "ADDED", "object": decoded(b)})
    sa, sb = inf.shared()[-2:]
    for s, want in ((sa, a), (sb, b)):
        del want["metadata"]["managedFields"]
        assert s == want
    # One copy of each, whichever object it came from: keys, values, list items.
    assert next(k for k in sa["metadata"] if k == "namespace") is next(k for k in sb["metadata"] if k == "namespace")
    assert sa["spec"]["type"] is sb["spec"]["type"]
    assert sa["spec"]["ipFamilies"][0] is sb["spec"]["ipFamilies"][0]
    assert sa["status"]["conditions"][0]["type"] is sb["status"]["conditions"][0]["type"]
    # Long strings are kept as decoded (seldom repeated: interning them would only cost).
    assert sa["status"]["conditions"][0]["message"] == long
    assert sa["status"]["conditions"][0]["message"] is not sb["status"]["conditions"][0]["message"]

