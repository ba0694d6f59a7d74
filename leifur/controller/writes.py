"""API writes of the controller, each guarded by the resourceVersion we decided on.

A write built from a stale cache fails with 409 Conflict; the work queue retries after
the informer has caught up. Merge patches replace lists whole, so finalizers are written
as the complete list we want.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kubernetes import client

from leifur.controller import status_log
from leifur.kube import timestamps
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
        self.core = client.CoreV1Api(api_client)

    def patch_metadata(self, svc: dict, finalizers: list[str], annotations: dict[str, str | None]) -> dict:
        """Set the finalizer list and our annotations (None deletes one). Returns the new object."""
        self._check()
        meta = svc["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": finalizers,
                             "annotations": annotations}}
        written = self.core.api_client.sanitize_for_serialization(self.core.patch_namespaced_service(
            meta["name"], meta["namespace"], body, _content_type=MERGE, _request_timeout=REQUEST_TIMEOUT))
        _log(status_log.finalizer_removed(svc, finalizers))
        return written

    def patch_status(self, svc: dict, ingress: list[dict], conditions: list[dict]) -> dict:
        self._check()
        meta = svc["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]},
                "status": {"loadBalancer": {"ingress": ingress or None}, "conditions": conditions or None}}
        written = self.core.api_client.sanitize_for_serialization(self.core.patch_namespaced_service_status(
            meta["name"], meta["namespace"], body, _content_type=MERGE, _request_timeout=REQUEST_TIMEOUT))
        _log(status_log.status_written(svc, ingress, conditions))
        return written


class CustomWriter(_Guarded):
    """Writes to our custom objects: pools' finalizers, and the status of pools and the BGP kinds."""

    def __init__(self, api_client: client.ApiClient, may_write: Callable[[], bool] | None = None) -> None:
        super().__init__(may_write)
        self.custom = client.CustomObjectsApi(api_client)

    def patch_finalizers(self, pool: dict, finalizers: list[str]) -> dict:
        self._check()
        meta = pool["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": finalizers}}
        return _json_object(self.custom.patch_cluster_custom_object(
            names.GROUP, names.VERSION, names.POOLS, meta["name"], body, _content_type=MERGE,
            _request_timeout=REQUEST_TIMEOUT))

    def patch_status(self, pool: dict, status: dict) -> dict:
        return self.patch_any_status(names.POOLS, pool, status)

    def patch_any_status(self, plural: str, obj: dict, status: dict) -> dict:
        """The status of a cluster-scoped object of ours (pools, the BGP kinds)."""
        self._check()
        meta = obj["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        return _json_object(self.custom.patch_cluster_custom_object_status(
            names.GROUP, names.VERSION, plural, meta["name"], body, _content_type=MERGE,
            _request_timeout=REQUEST_TIMEOUT))


def _log(lines: list[status_log.Line]) -> None:
    """Once the write is done: a write that failed changed nothing to tell."""
    for line in lines:
        log.log(line.level, line.message, extra=line.fields)


def _json_object(obj: object) -> dict:
    """The custom-objects API is typed `object`; for a patch it returns the decoded JSON object."""
    if not isinstance(obj, dict):
        raise TypeError(f"expected a JSON object from the API server, got {type(obj).__name__}")
    return obj
