"""What the controller's writes to a Service say in its log: the IPs a status write gives it
(allocation) or takes away (release), the allocation failing (Taken, Exhausted, ...) or an
address conflict as each starts, and the IPs a removed finalizer lets go. Each line carries the
Service, its IPs and pool as fields (logfields), to filter on. Pure: the writer logs the lines."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from leifur.controller.allocation import REASON_PARTIAL
from leifur.kube.logfields import Value, fields
from leifur.model import annotations as ann
from leifur.model import names, service
from leifur.model.objects import key_of


@dataclass(frozen=True)
class Line:
    level: int
    message: str
    fields: dict[str, Value]


def _condition(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def _said(c: dict | None) -> tuple[object, ...] | None:
    return None if c is None else (c.get("status"), c.get("reason"), c.get("message"))


def _pools(svc: dict) -> list[str] | None:
    annotations = svc["metadata"].get("annotations") or {}
    allocated = annotations.get(names.ANN_ALLOCATED_FROM_POOL)
    if allocated:
        return allocated.split(",")
    asked = ann.read(annotations, names.ANN_ADDRESS_POOL).value  # ours, or MetalLB's spelling
    return [asked] if asked else None


def _ips(ips: list[str]) -> str:
    return ", ".join(ips)


def status_written(svc: dict, ingress: list[dict], conditions: list[dict]) -> list[Line]:
    """The lines for writing `ingress` and `conditions` into the status of `svc` (as it was)."""
    key = key_of(svc)
    pools = _pools(svc)
    before = [str(ip) for ip in service.ingress_ips(svc)]
    after = [str(ip) for ip in service.ingress_ips({"status": {"loadBalancer": {"ingress": ingress}}})]
    lines = []
    gained = [ip for ip in after if ip not in before]
    if gained:
        where = f" from pool {','.join(pools)}" if pools else ""
        lines.append(Line(logging.INFO, f"{key}: assigned {_ips(gained)}{where}",
                          fields(service=key, ip=gained, pool=pools)))
    lost = [ip for ip in before if ip not in after]
    if lost:
        lines.append(Line(logging.INFO, f"{key}: released {_ips(lost)}", fields(service=key, ip=lost)))

    old_status = (svc.get("status") or {}).get("conditions")
    new = _condition(conditions, names.COND_SERVICE_ALLOCATED)
    failing = new is not None and (new.get("status") != "True" or new.get("reason") == REASON_PARTIAL)
    if failing and new is not None and _said(new) != _said(_condition(old_status, names.COND_SERVICE_ALLOCATED)):
        asked: list[str] = []
        with contextlib.suppress(service.ServiceSpecError):  # the condition's message says what is wrong
            asked = [str(ip) for ip in service.requested_ips(svc)]
        lines.append(Line(logging.WARNING, f"{key}: {new.get('reason')}: {new.get('message')}",
                          fields(service=key, ip=asked or after or None, pool=pools)))

    conflict = _condition(conditions, names.COND_ADDRESS_CONFLICT)
    old_conflict = _condition(old_status, names.COND_ADDRESS_CONFLICT)
    if conflict is not None and conflict.get("status") == "True" and _said(conflict) != _said(old_conflict):
        lines.append(Line(logging.WARNING, f"{key}: address conflict: {conflict.get('message')}",
                          fields(service=key, ip=after or None, pool=pools)))
    elif old_conflict is not None and old_conflict.get("status") == "True" and (
            conflict is None or conflict.get("status") != "True"):
        lines.append(Line(logging.INFO, f"{key}: address conflict over", fields(service=key, ip=after or None)))
    return lines


def finalizer_removed(svc: dict, finalizers: list[str]) -> list[Line]:
    """The line for writing `finalizers` into `svc` (as it was): the IPs its status still shows are
    free once our finalizer is gone (the Service is being deleted, or is no longer ours)."""
    had = names.SERVICE_FINALIZER in (svc["metadata"].get("finalizers") or [])
    ips = [str(ip) for ip in service.ingress_ips(svc)]
    if not had or names.SERVICE_FINALIZER in finalizers or not ips:
        return []
    key = key_of(svc)
    return [Line(logging.INFO, f"{key}: let go of {_ips(ips)} (finalizer removed)",
                 fields(service=key, ip=ips, pool=_pools(svc)))]
