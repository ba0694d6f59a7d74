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
from .frr import FRR, NOT_CONFIGURED, FRRError
from .frr_config import Problem, render, withdrawal
from .records import SessionRecord

log = logging.getLogger(__name__)

# How long the Secrets of a namespace a BGPPeer names may take to be read before the sessions
# that need them are reported and left out (an informer that cannot list them retries forever).
SECRET_PATIENCE_S = 10.0


class Secrets(Protocol):
    """Where the sessions' passwords come from (the agent's caches)."""

    def watch_secrets(self, namespaces: set[str], patience: float) -> bool: ...
    def password(self, ref: SecretRef) -> str | None: ...


class Since:
    """When each session entered its state, fixed when the state is first seen rather than
    recomputed from the daemon's counter at each read (which moves by a second now and then):
    the record is written only when it changes."""

    def __init__(self, ago: Callable[[float], str] = timestamps.ago) -> None:
        self._ago = ago
        self._seen: dict[str, tuple[str, str | None]] = {}  # peer -> (state, since)

    def since(self, s: SessionState) -> tuple[str | None, bool]:
        """The session's since, and whether its state is new (first seen, or changed)."""
        seen = self._seen.get(s.peer)
        if seen is not None and seen[0] == s.state:
            return seen[1], False
        # The daemon's time in the state if it gives one; a change it gives none for happened now.
        since = self._ago(s.since_s) if s.since_s is not None else self._ago(0) if seen is not None else None
        self._seen[s.peer] = (s.state, since)
        return since, True

    def keep(self, peers: set[str]) -> None:
        for gone in self._seen.keys() - peers:
            del self._seen[gone]


class Speaker:
    """Keeps the node's FRR equal to its BGP intent; reports what FRR says."""

    def __init__(self, frr: FRR, node: str, *, report: Callable[[Problem], None]) -> None:
        self.frr = frr
        self.node = node
        self._report = report
        self.intent = NodeIntent(router_id="")
        self._passwords: dict[str, str] = {}
        self._applied: str | None = None  # the text FRR was last given successfully
        self._since = Since()
        self._problems: frozenset[Problem] = frozenset()
        self._generation: int | None = None  # of the caches the applied intent was made from
        self._configured: set[str] = set()  # peers whose session FRR was given at the last apply
        self._unknown: set[str] = set()  # peers whose session FRR did not know at the last read
        self._in_doubt = False  # an apply failed: what FRR and its file hold is not known

    def sync(self, cluster: plan.Cluster, load_balancer_class: str | None, secrets: Secrets,
             generation: int | None = None) -> tuple[SessionRecord, ...] | None:
        """Apply the intent if it changed; the sessions as they are now. None while the Secrets
        the sessions name are not read yet (FRR keeps what it has: a session is not opened
        without its password, nor torn down for want of it). `generation` (the caches'): the
        same as at the last successful apply means the same intent, not made again (the plan
        covers every Service; most syncs are the periodic resync with nothing changed)."""
        # FRR restarted without its configuration (a daemon restarted alone, a fresh volume) knows
        # none of the sessions it was given: the same text again, or nothing would bring them back.
        lost = self._unknown & self._configured
        if generation is not None and generation == self._generation and not lost:
            return self.read()
        intent = bgp_plan.node_intent(cluster, self.node, load_balancer_class)
        refs = [s.password_secret for s in intent.sessions if s.password_secret]
        if not secrets.watch_secrets({r.namespace for r in refs}, SECRET_PATIENCE_S):
            return None
        passwords = {s.peer: p for s in intent.sessions if s.password_secret
                     and (p := secrets.password(s.password_secret)) is not None}
        rendered = render(intent, passwords)
        self._problems_changed(frozenset(rendered.problems))
        if lost and rendered.text == self._applied:
            log.warning("BGP: FRR does not know the session(s) to %s it was given (restarted?): applying again",
                        ", ".join(sorted(lost)))
        if rendered.text != self._applied or lost or self._in_doubt:
            # A daemon that died during an apply may come back from the file written for it: not
            # what was last applied, and perhaps not what comes next either.
            self._in_doubt = True
            self.frr.apply(rendered.text)
            self._in_doubt = False
            metrics.BGP_APPLIES.inc()
            routes = sum(len(r) for r in intent.routes.values())
            log.info("BGP configuration applied: %d session(s), %d route(s) to advertise",
                     len(rendered.configured(intent)), routes)
            self._applied = rendered.text
        self._configured = {s.peer for s in rendered.configured(intent)}
        self.intent, self._passwords, self._generation = intent, passwords, generation
        return self.read()

    def read(self) -> tuple[SessionRecord, ...]:
        """The intent's sessions as FRR reports them, into the metrics."""
        states = self.frr.sessions(self.intent.sessions)
        self._unknown = {s.peer for s in states if s.state == NOT_CONFIGURED}
        self._since.keep({s.peer for s in states})
        records = tuple(self._record(s) for s in states)
        metrics.set_bgp_sessions(states)
        return records

    def withdraw(self, timeout: float) -> bool:
        """Advertise nothing, keep the sessions, and wait until the peers have been told."""
        if self._applied is None:
            return True  # never configured by this process: nothing of ours to withdraw
        try:
            done = self.frr.withdraw(withdrawal(self.intent), timeout)
        except FRRError as e:
            log.warning("could not withdraw the BGP routes: %s", e)
            return False
        self._applied = None  # FRR no longer runs the text last applied
        if done:
            log.info("BGP routes withdrawn from every established session")
        return done

    def _record(self, s: SessionState) -> SessionRecord:
        since, changed = self._since.since(s)
        if changed:
            log.info("BGP session to %s (%s) is %s", s.peer, s.address, s.state)
        message = "; ".join(sorted(p.message for p in self._problems if p.peer == s.peer)) or None
        return SessionRecord(s.peer, s.address, s.state, since, s.prefixes_advertised, s.bfd, message)

    def _problems_changed(self, problems: frozenset[Problem]) -> None:
        for p in sorted(problems - self._problems, key=lambda p: (p.peer or "", p.message)):
            log.warning("BGP peer %s: %s", p.peer or "(node)", p.message)
            self._report(p)
        self._problems = problems
