"""The informer's cache without metadata.managedFields and with its keys and short strings
shared, from a LIST and from watch events; list_all's restart when a page expires (the API is
faked: the request function and the informer's event handling are driven directly)."""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from leifur.kube import client as client_module
from leifur.kube import informer as informer_module
from leifur.kube.informer import Informer
from leifur.kube.kept import LAST_APPLIED, kept

MANAGED = [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:ports": {}}}}]


def svc(name: str, rv: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv,
                         "annotations": {"a": "b", LAST_APPLIED: json.dumps({"kind": "Service", "spec": {}})},
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


def test_listed_and_watched_objects_are_stored_without_managed_fields_or_the_last_applied_copy(inf):
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
        del want["metadata"]["annotations"][LAST_APPLIED]
        assert s == want
    # One copy of each, whichever object it came from: keys, values, list items.
    assert next(k for k in sa["metadata"] if k == "namespace") is next(k for k in sb["metadata"] if k == "namespace")
    assert sa["spec"]["type"] is sb["spec"]["type"]
    assert sa["spec"]["ipFamilies"][0] is sb["spec"]["ipFamilies"][0]
    assert sa["status"]["conditions"][0]["type"] is sb["status"]["conditions"][0]["type"]
    # Long strings are kept as decoded (seldom repeated: interning them would only cost).
    assert sa["status"]["conditions"][0]["message"] == long
    assert sa["status"]["conditions"][0]["message"] is not sb["status"]["conditions"][0]["message"]


def test_list_all_starts_over_in_one_page_when_its_continue_token_expired(monkeypatch):
    """410 Gone on a later page (the token outlived etcd's compaction window): the pages read so
    far are dropped and the LIST is read again unpaged, so nothing is counted twice."""
    sent: list[dict] = []

    def fake(_api, _method, _path, *, query, timeout):
        q = dict(query)
        sent.append(q)
        if "continue" in q:
            raise ApiException(status=410, reason="Gone")
        if "limit" in q:
            return {"metadata": {"continue": "t1"}, "items": [svc("a", "1")]}
        return {"metadata": {}, "items": [svc("a", "2"), svc("b", "2")]}

    monkeypatch.setattr(client_module, "request", fake)
    items = client_module.list_all(client.ApiClient(), "/api/v1/services", keep=kept)
    assert [(o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in items] == [("a", "2"), ("b", "2")]
    assert [("limit" in q, "continue" in q) for q in sent] == [(True, False), (True, True), (False, False)]


def test_an_informer_keeps_what_its_keep_function_returns_from_lists_and_watches(monkeypatch):
    body = {"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "10"},
            "items": [svc("listed", "5")]}
    monkeypatch.setattr(informer_module, "request", lambda *a, **kw: copy.deepcopy(body))
    i = Informer(client.ApiClient(), "/api/v1/services", "services-keep",
                 keep=lambda o: {"metadata": o["metadata"], "spec": {"type": o["spec"]["type"]}})
    i._list_and_replace()
    i._handle_event({"type": "ADDED", "object": {**svc("watched", "11"), "status": {"big": "x" * 100}}})
    assert [sorted(o) for o in i.shared()] == [["apiVersion", "kind", "metadata", "spec"], ["metadata", "spec"]]
    assert i.resource_version == "11"
