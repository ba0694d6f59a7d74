"""The agent's one API write: its node's L2NodeStatus (which IPs it announces, where, how).

Written only when what this node announces changes, never periodically, so an idle cluster
costs the API server no writes at all. The writer runs on its own thread: an unreachable API
server delays the record, never the announcements. Writes are server-side apply (one request
creates or updates), at most one per `min_interval`, and a failed write is retried with backoff
until it lands or a newer state replaces it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes import client

from leifur.announce.interfaces import Lost
from leifur.kube.backoff import Backoff
from leifur.kube.client import request
from leifur.model import names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    ip: str
    services: tuple[str, ...]
    pool: str | None
    interfaces: tuple[str, ...]
    mode: str
    since: str

    def as_dict(self) -> dict:
        out = {"ip": self.ip, "services": list(self.services), "interfaces": list(self.interfaces),
               "mode": self.mode, "since": self.since}
        if self.pool:
            out["pool"] = self.pool
        return out


@dataclass(frozen=True)
class ConflictRecord:
    """A host outside the cluster using an IP this node owns (agent/conflicts.py)."""

    ip: str
    mac: str
    interface: str
    kind: str  # InUse | Claimed
    since: str
    services: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"ip": self.ip, "mac": self.mac, "interface": self.interface, "kind": self.kind,
                "since": self.since, "services": list(self.services)}


@dataclass(frozen=True)
class SessionRecord:
    """One session as the node's record shows it (status.bgp.sessions[])."""

    peer: str
    address: str
    state: str
    since: str | None = None
    prefixes_advertised: int = 0
    bfd: str | None = None
    message: str | None = None  # what of the peer's configuration the agent could not write

    def as_dict(self) -> dict:
        out: dict = {"peer": self.peer, "address": self.address, "state": self.state,
                     "prefixesAdvertised": self.prefixes_advertised}
        if self.since:
            out["since"] = self.since
        if self.bfd is not None:
            out["bfd"] = self.bfd
        if self.message:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class NodeState:
    """Everything the record says: the announcements, the conflicts, and the MACs of this node's
    interfaces (peers tell a handover from a foreign claim by them)."""

    records: tuple[Record, ...] = ()
    conflicts: tuple[ConflictRecord, ...] = ()
    macs: tuple[str, ...] = ()
    lost: Lost = field(default_factory=Lost)  # what this node's down links keep it from announcing
    bgp: tuple[SessionRecord, ...] | None = None  # the BGP sessions; None: BGP mode is off (no status.bgp)


def status_body(node: str, node_uid: str | None, records: Sequence[Record],
                conflicts: Sequence[ConflictRecord] = (), macs: Sequence[str] = (), lost: Lost | None = None,
                bgp: Sequence[SessionRecord] | None = None) -> dict:
    """The whole L2NodeStatus object for a server-side apply."""
    meta: dict = {"name": node}
    if node_uid:
        # Garbage collection removes the record with its Node.
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]
    ordered = sorted(records, key=lambda r: r.ip)
    status = {"count": len(ordered), "ips": ",".join(r.ip for r in ordered),
              "announcements": [r.as_dict() for r in ordered],
              "conflicts": [c.as_dict() for c in sorted(conflicts, key=lambda c: c.ip)],
              "macs": sorted(macs), "lost": (lost or Lost()).as_dict()}
    if bgp is not None:
        status["bgp"] = {"sessions": [s.as_dict() for s in sorted(bgp, key=lambda s: s.peer)]}
    return {"apiVersion": names.API_VERSION, "kind": "L2NodeStatus", "metadata": meta, "status": status}


class RecordWriter:
    """Keeps `l2nodestatuses/<node>` equal to the latest `set(records)`, asynchronously."""

    def __init__(self, api_client: client.ApiClient, node: str, node_uid: Callable[[], str | None], *,
                 min_interval: float = 1.0, request_timeout: tuple[float, float] = (2, 5)) -> None:
        self.api_client = api_client
        self.node = node
        self.node_uid = node_uid
        self.min_interval = min_interval
        self.request_timeout = request_timeout
        self.writes = 0  # successful writes, for tests and the benchmark
        self._cond = threading.Condition()
        self._wanted: NodeState | None = None
        self._written: NodeState | None = None
        self._written_uid: str | None = None
        self._last_write = 0.0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="l2nodestatus", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set(self, records: Sequence[Record]) -> None:
        with self._cond:
            self._wanted = replace(self._wanted or NodeState(), records=tuple(sorted(records, key=lambda r: r.ip)))
            self._cond.notify_all()

    def set_conflicts(self, conflicts: Sequence[ConflictRecord]) -> None:
        self._want(conflicts=tuple(sorted(conflicts, key=lambda c: c.ip)))

    def set_macs(self, macs: Sequence[str]) -> None:
        self._want(macs=tuple(sorted(set(macs))))

    def set_lost(self, lost: Lost) -> None:
        self._want(lost=lost)

    def set_bgp(self, sessions: Sequence[SessionRecord]) -> None:
        self._want(bgp=tuple(sorted(sessions, key=lambda s: s.peer)))

    def _want(self, **changes: Any) -> None:
        with self._cond:
            new = replace(self._wanted or NodeState(), **changes)
            if new != self._wanted:
                self._wanted = new
                self._cond.notify_all()

    def check(self, observed: dict | None, synced: bool) -> None:
        """Write again if what is in the API is not what we wrote: our record was deleted (by hand,
        or collected with a Node re-created under the same name), or the Node's UID changed."""
        with self._cond:
            if self._written is None:
                return
            recent = time.monotonic() - self._last_write < 5  # the informer may not have seen our write
            gone = synced and observed is None and not recent
            if gone or self.node_uid() != self._written_uid:
                self._written = None
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until the latest state is written; False if it was not within `timeout`."""
        with self._cond:
            return self._cond.wait_for(lambda: self._wanted == self._written, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        last = 0.0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self._wanted != self._written)
                if self._stop:
                    return
            # Batch a flurry of changes (a failover moves many IPs at once) into one write.
            wait = last + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self._cond:
                wanted = self._wanted
            last = time.monotonic()
            try:
                self._write(wanted or NodeState())
            except Exception as e:
                wait = backoff.next()
                log.warning("could not write L2NodeStatus %s (retrying in %.1fs): %s", self.node, wait,
                            str(e).splitlines()[0][:300])
                with self._cond:
                    self._cond.wait_for(lambda: self._stop, wait)
                continue
            backoff.reset()
            with self._cond:
                self._written = wanted
                self._cond.notify_all()

    def _write(self, state: NodeState) -> None:
        uid = self.node_uid()
        body = status_body(self.node, uid, state.records, state.conflicts, state.macs, state.lost, state.bgp)
        request(self.api_client, "PATCH", f"/apis/{names.API_VERSION}/{names.L2NODESTATUSES}/{self.node}",
                query=[("fieldManager", names.AGENT_NAME), ("force", "true")],
                body=json.dumps(body), content_type="application/apply-patch+yaml", timeout=self.request_timeout)
        self.writes += 1
        with self._cond:
            self._written_uid = uid
            self._last_write = time.monotonic()
