"""BGP mode on one node: the plan's intent for it into FRR, the sessions back into its record and metrics.

At each sync: intent (bgp_plan.node_intent, pure) -> FRR's configuration (frr_config.render,
pure), applied only when the text changed; then the sessions are read back. Independent of
layer 2's election: every eligible node advertises, the router spreads the traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from leifur.announce import bgp_plan, plan
from leifur.announce.bgp_intent import NodeIntent, SecretRef, SessionState
from leifur.kube import timestamps

from . import metrics
from .frr import FRR, FRRError
from .frr_config import Problem, render, withdrawn
from .records import SessionRecord

log = logging.getLogger(__name__)

# How long the Secrets of a namespace a BGPPeer names may take to be read before the sessions
# that need them are reported and left out (an informer that cannot list them retries forever).
SECRET_PATIENCE_S = 10.0


class Secrets(Protocol):
    """Where the sessions' passwords come from (the agent's caches)."""

    def watch_secrets(self, namespaces: set[str], patience: float) -> bool: ...
    def password(self, ref: SecretRef) -> str | None: ...


class Speaker:
    """Keeps the node's FRR equal to its BGP intent; reports what FRR says."""

    def __init__(self, frr: FRR, node: str, *, report: Callable[[Problem], None]) -> None:
        self.frr = frr
        self.node = node
        self._report = report
        self.intent = NodeIntent(router_id="")
        self._passwords: dict[str, str] = {}
        self._applied: str | None = None  # the text FRR was last given successfully
        self._since: dict[str, tuple[str, str | None]] = {}  # peer -> (state, since) as first seen
        self._problems: frozenset[Problem] = frozenset()

    def sync(self, cluster: plan.Cluster, load_balancer_class: str | None,
             secrets: Secrets) -> tuple[SessionRecord, ...] | None:
        """Apply the intent if it changed; the sessions as they are now. None while the Secrets
        the sessions name are not read yet (FRR keeps what it has: a session is not opened
        without its password, nor torn down for want of it)."""
        intent = bgp_plan.node_intent(cluster, self.node, load_balancer_class)
        refs = [s.password_secret for s in intent.sessions if s.password_secret]
        if not secrets.watch_secrets({r.namespace for r in refs}, SECRET_PATIENCE_S):
            return None
        passwords = {s.peer: p for s in intent.sessions if s.password_secret
                     and (p := secrets.password(s.password_secret)) is not None}
        rendered = render(intent, passwords)
        self._problems_changed(frozenset(rendered.problems))
        if rendered.text != self._applied:
            self.frr.apply(rendered.text)
            metrics.BGP_APPLIES.inc()
            routes = sum(len(r) for r in intent.routes.values())
            log.info("BGP configuration applied: %d session(s), %d route(s) to advertise",
                     len(rendered.configured(intent)), routes)
            self._applied = rendered.text
        self.intent, self._passwords = intent, passwords
        return self.read()

    def read(self) -> tuple[SessionRecord, ...]:
        """The intent's sessions as FRR reports them, into the metrics."""
        states = self.frr.sessions(self.intent.sessions)
        for gone in self._since.keys() - {s.peer for s in states}:
            del self._since[gone]
        records = tuple(self._record(s) for s in states)
        metrics.set_bgp_sessions(states)
        return records

    def withdraw(self, timeout: float) -> bool:
        """Advertise nothing, keep the sessions, and wait until the peers have been told."""
        if self._applied is None:
            return True  # never configured by this process: nothing of ours to withdraw
        text = render(withdrawn(self.intent), self._passwords).text
        try:
            done = self.frr.withdraw(text, timeout)
        except FRRError as e:
            log.warning("could not withdraw the BGP routes: %s", e)
            return False
        self._applied = text
        if done:
            log.info("BGP routes withdrawn from every established session")
        return done

    def _record(self, s: SessionState) -> SessionRecord:
        seen = self._since.get(s.peer)
        if seen is None or seen[0] != s.state:
            # Fixed when the state is first seen, not recomputed from the daemon's counter at each
            # read: the record is written only when it changes.
            since = None
            if s.since_s is not None:
                since = timestamps.ago(s.since_s)
            elif seen is not None:
                since = timestamps.now()
            seen = (s.state, since)
            self._since[s.peer] = seen
            log.info("BGP session to %s (%s) is %s", s.peer, s.address, s.state)
        return SessionRecord(s.peer, s.address, s.state, seen[1], s.prefixes_advertised, s.bfd)

    def _problems_changed(self, problems: frozenset[Problem]) -> None:
        for p in sorted(problems - self._problems, key=lambda p: (p.peer or "", p.message)):
            log.warning("BGP peer %s: %s", p.peer or "(node)", p.message)
            self._report(p)
        self._problems = problems
