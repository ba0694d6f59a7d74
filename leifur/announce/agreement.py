"""Agents agree on who owns what before one takes an IP from a live peer.

Every agent decides from its own informer cache. Normally the caches differ for milliseconds
(one watch event reaches every agent at once), and a handover overlaps for that long. After an
API-server outage, or with one agent's watches silently stalled, they can differ for seconds:
a fresh agent would take an IP that a stale owner still announces, and both would answer.

So each agent puts a digest of its decisions (every IP and the node that should announce it)
into its heartbeats, and remembers who owned each IP the last time all digests agreed, and
every owner it decided for each IP since. While some ready peer's digest differs, it does not
take an IP that another live peer owned at the last agreement or since: that peer may still
announce it. Nor an IP it knows no owner of at all (a new Service's): a stale peer's view can
be newer than the last agreement, and hold that IP from a state this node never saw (a Service
created and deleted, its IP given to another, all inside one outage). It takes the IP once the
digests agree again (the old owner has let it go); for a new Service in the normal case that is
the milliseconds its peers take to see it too. Everything else goes ahead at once:
- an IP whose known owners are all dead or leaving, or this node (a crash failover is not slowed);
- anything, once the views have differed for longer than `patience` (a peer that never
  catches up, agents of different versions): act alone, as if there were no agreement.
An agent that has never seen agreement (it just started) holds back every IP while views differ.

`Agreement` keeps the bookkeeping across syncs; its `verdict(now)` is a frozen answer that the
agent's pure sync step applies. Pure: time is passed in; tested without sockets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from leifur.announce import plan


def digest(decisions: Mapping[str, plan.Decision]) -> str:
    """A short fingerprint of who should announce each IP. Equal digests, equal owners."""
    h = hashlib.blake2b(digest_size=8)
    for ip in sorted(decisions):
        a = decisions[ip].announcement
        if a is not None:
            h.update(f"{ip}={a.node};".encode())
    return h.hexdigest()


def owners(decisions: Mapping[str, plan.Decision]) -> dict[str, str]:
    return {ip: d.announcement.node for ip, d in decisions.items() if d.announcement is not None}


@dataclass(frozen=True)
class Verdict:
    """What the agreement allows at one moment."""

    me: str
    waiting: bool  # some ready peer decides differently, and patience is not out
    agreed: Mapping[str, str] | None  # IP -> owner at the last agreement; None if never seen
    # IP -> every owner we decided for it since the last agreement.
    since: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    def held_back(self, gains: Iterable[str], live: Iterable[str]) -> set[str]:
        """Of the IPs we would newly announce, those to leave alone for now.

        `live`: the nodes that may announce now (alive and ready), this one included.
        """
        if not self.waiting:
            return set()
        if self.agreed is None:
            return set(gains)  # no agreement seen yet: any peer may hold anything
        live = set(live)
        held = set()
        for ip in gains:
            others = (self.since.get(ip, frozenset()) | {self.agreed.get(ip, self.me)}) - {self.me}
            if others & live:
                held.add(ip)  # a live peer owned it at the last agreement or since: it may still announce it
            elif not others and ip not in self.agreed:
                held.add(ip)  # new since the last agreement: a stale peer may hold it from a state we never saw
        return held


class Agreement:
    """What this node may take now, given the peers' digests."""

    def __init__(self, me: str, patience: float) -> None:
        self.me = me
        self.patience = patience
        self.differing: frozenset[str] = frozenset()
        self._differ_since: float | None = None  # when the views started to differ
        self._agreed: dict[str, str] | None = None  # IP -> owner, as of the last moment all views agreed
        self._owners_since: dict[str, frozenset[str]] = {}  # IP -> every owner we decided since that moment

    def observe(self, mine: str, peers: Mapping[str, str], decided: Mapping[str, str], now: float) -> None:
        """Our digest, the ready peers' digests ("" = unknown: not counted) and our IP -> owner map."""
        self.differing = frozenset(n for n, v in peers.items() if v and v != mine)
        if self.differing:
            if self._differ_since is None:
                self._differ_since = now
            new = {ip: self._owners_since.get(ip, frozenset()) | {owner} for ip, owner in decided.items()
                   if owner not in self._owners_since.get(ip, frozenset())}
            if new:  # replaced, never changed in place: a Verdict handed out keeps a true picture
                self._owners_since = {**self._owners_since, **new}
        else:
            self._differ_since = None
            self._agreed = dict(decided)
            self._owners_since = {}

    def impatient(self, now: float) -> bool:
        """The views have differed for longer than we wait."""
        return self._differ_since is not None and now - self._differ_since >= self.patience

    def verdict(self, now: float) -> Verdict:
        # observe() replaces _agreed, never changes it in place: a read-only view of it stays true.
        agreed = None if self._agreed is None else MappingProxyType(self._agreed)
        return Verdict(self.me, bool(self.differing) and not self.impatient(now), agreed,
                       MappingProxyType(self._owners_since))
