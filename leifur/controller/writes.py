"""API writes of the controller, each guarded by the resourceVersion we decided on.

A write built from a stale cache fails with 409 Conflict; the work queue retries after
the informer has caught up. Merge patches replace lists whole, so finalizers are written
as the complete list we want.

Plain JSON, as the informers read: the typed CoreV1Api would load some 250 model classes
(about 20 MB, a quarter of an idle controller) to decode an answer we only read as a dict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kubernetes import client

from leifur.controller import status_log
from leifur.kube import timestamps
from leifur.kube.client import request
from leifur.kube.worker import Retryable
from leifur.model import names

log = logging.getLogger(__name__)

MERGE = "application/merge-patch+json"
# connect, read: bounds every sync's API calls, and keeps a write that started just before the
# Lease was lost from landing after the next leader took over (lease - renew deadline = 5 s).
REQUEST_TIMEOUT = (2, 4)


class NotLeader(Retryable):
    """A write was refused because this replica no longer holds the leader Lease."""


def condition(old: list[dict] | None, type_: str, status: bool, reason: str, message: str,
              generation: int | None) -> list[dict]:
    """The conditions list with `type_` set; lastTransitionTime moves only when the status flips."""
    old = old or []
    prev = next((c for c in old if c.get("type") == type_), None)
    status_s = "True" if status else "False"
    cond = {
        "type": type_, "status": status_s, "reason": reason, "message": message[:32768],
        "lastTransitionTime": (prev["lastTransitionTime"] if prev and prev.get("status") == status_s
                               else timestamps.now()),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return [c for c in old if c.get("type") != type_] + [cond]


def same_conditions(a: list[dict] | None, b: list[dict] | None) -> bool:
    def strip(cs: list[dict] | None) -> list[tuple]:
        return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message"),
                       c.get("observedGeneration")) for c in cs or [])
    return strip(a) == strip(b)


class _Guarded:
    """Every write first asks `may_write` (the leader check), so a sync in flight when the Lease
    is lost stops at its next write."""

    def __init__(self, may_write: Callable[[], bool] | None) -> None:
        self._may_write = may_write or (lambda: True)

    def _check(self) -> None:
        if not self._may_write():
            raise NotLeader("not the leader: write skipped")


class ServiceWriter(_Guarded):
    def __init__(self, api_client: client.ApiClient, may_write: Callable[[], bool] | None = None) -> None:
        super().__init__(may_write)
        self.api_client = api_client
        # Whether the API server keeps metadata sent to a Service's /status (None: not seen yet).
        # It does for Services and the other early kinds, so that a new Service's finalizer, pool
        # annotation and IP take one write; the API conventions do not promise it, so it is
        # learned from the answers, never assumed.
        self.status_keeps_metadata: bool | None = None

    def patch_metadata(self, svc: dict, finalizers: list[str], annotations: dict[str, str | None]) -> dict:
        """Set the finalizer list and our annotations (None deletes one). Returns the new object."""
        self._check()
        written = _patch(self.api_client, _service_path(svc["metadata"]),
                         _metadata_body(svc, finalizers, annotations))
        _log(status_log.finalizer_removed(svc, finalizers))
        return written

    def patch_status(self, svc: dict, ingress: list[dict], conditions: list[dict],
                     finalizers: list[str] | None = None,
                     annotations: dict[str, str | None] | None = None) -> dict:
        """Write the status; with `finalizers`, set them and `annotations` no later than the status
        (so that no IP shows without the finalizer): in the same write where the API server keeps
        metadata on /status, in a metadata write first where it does not."""
        self._check()
        path = _service_path(svc["metadata"]) + "/status"
        status = {"loadBalancer": {"ingress": ingress or None}, "conditions": conditions or None}
        annotations = annotations or {}
        if finalizers is None:
            written = _patch(self.api_client, path, {**_metadata_body(svc), "status": status})
        elif self.status_keeps_metadata:
            written = _patch(self.api_client, path, {**_metadata_body(svc, finalizers, annotations), "status": status})
            if not _carries(written, finalizers, annotations):
                # The API server stopped keeping them (upgraded under us): put them on at once.
                log.warning("the API server no longer keeps metadata written with a Service's status: "
                            "the finalizer goes in a write of its own from now on")
                self.status_keeps_metadata = False
                written = self.patch_metadata(written, finalizers, annotations)
        else:
            written = self._metadata_first(path, svc, finalizers, annotations)
            written = _patch(self.api_client, path, {**_metadata_body(written), "status": status})
        # The status as it was, with the metadata as written (the pool the IPs came from).
        _log(status_log.status_written({**svc, "metadata": written["metadata"]}, ingress, conditions))
        return written

    def _metadata_first(self, status_path: str, svc: dict, finalizers: list[str],
                        annotations: dict[str, str | None]) -> dict:
        if self.status_keeps_metadata is None:
            # Learn it with a write that shows no IP yet: metadata alone, through /status.
            written = _patch(self.api_client, status_path, _metadata_body(svc, finalizers, annotations))
            self.status_keeps_metadata = _carries(written, finalizers, annotations)
            log.info("the API server %s metadata written with a Service's status",
                     "keeps" if self.status_keeps_metadata else "drops")
            if self.status_keeps_metadata:
                return written
            svc = written
        return self.patch_metadata(svc, finalizers, annotations)


class CustomWriter(_Guarded):
    """Writes to our custom objects: pools' finalizers, and the status of pools and the BGP kinds."""

    def __init__(self, api_client: client.ApiClient, may_write: Callable[[], bool] | None = None) -> None:
        super().__init__(may_write)
        self.api_client = api_client

    def patch_finalizers(self, pool: dict, finalizers: list[str]) -> dict:
        self._check()
        meta = pool["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": finalizers}}
        return _patch(self.api_client, _custom_path(names.POOLS, meta), body)

    def patch_status(self, pool: dict, status: dict) -> dict:
        return self.patch_any_status(names.POOLS, pool, status)

    def patch_any_status(self, plural: str, obj: dict, status: dict) -> dict:
        """The status of a cluster-scoped object of ours (pools, the BGP kinds)."""
        self._check()
        meta = obj["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        return _patch(self.api_client, _custom_path(plural, meta) + "/status", body)


def _log(lines: list[status_log.Line]) -> None:
    """Once the write is done: a write that failed changed nothing to tell."""
    for line in lines:
        log.log(line.level, line.message, extra=line.fields)


def _metadata_body(svc: dict, finalizers: list[str] | None = None,
                   annotations: dict[str, str | None] | None = None) -> dict:
    meta: dict = {"resourceVersion": svc["metadata"]["resourceVersion"]}
    if finalizers is not None:
        meta["finalizers"] = finalizers
        meta["annotations"] = annotations or {}
    return {"metadata": meta}


def _carries(obj: dict, finalizers: list[str], annotations: dict[str, str | None]) -> bool:
    """Whether the object as written shows the finalizers and annotations a write asked for."""
    meta = obj.get("metadata") or {}
    have = meta.get("annotations") or {}
    return (set(meta.get("finalizers") or []) == set(finalizers)
            and all(have.get(k) == v for k, v in annotations.items()))


def _service_path(meta: dict) -> str:
    return f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}"


def _custom_path(plural: str, meta: dict) -> str:
    return f"/apis/{names.API_VERSION}/{plural}/{meta['name']}"


def _patch(api_client: client.ApiClient, path: str, body: dict) -> dict:
    """A merge patch; the object as the API server returns it, or ApiException (409 on a stale
    resourceVersion)."""
    return request(api_client, "PATCH", path, body=body, content_type=MERGE, timeout=REQUEST_TIMEOUT)
