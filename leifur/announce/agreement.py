"""Agents agree on who owns what before one takes an IP from a live peer.

Every agent decides from its own informer cache. Normally the caches differ for milliseconds
(one watch event reaches every agent at once), and a handover overlaps for that long. After an
API-server outage, or with one agent's watches silently stalled, they can differ for seconds:
a fresh agent would take an IP that a stale owner still announces, and both would answer.

So each agent puts a digest of its decisions (every IP and the node that should announce it)
into its heartbeats, and remembers who owned each IP the last time all digests agreed. While
some ready peer's digest differs, it does not take an IP whose agreed owner is another live
peer: that peer may still announce it. It takes the IP once the digests agree again (the old
owner has let it go). Everything else goes ahead at once:
- an IP whose agreed owner is dead or leaving (a crash failover is not slowed);
- an IP nobody owned at the last agreement (a new Service: a stale peer cannot have it, since
  its view is at least as new as that agreement);
- anything, once the views have differed for longer than `patience` (a peer that never
  catches up, agents of different versions): act alone, as if there were no agreement.
An agent that has never seen agreement (it just started) holds back every IP while views differ.

`Agreement` keeps the bookkeeping across syncs; its `verdict(now)` is a frozen answer that the
agent's pure sync step applies. Pure: time is passed in; tested without sockets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
            last = self.agreed.get(ip)
            if last is None or last == self.me or last not in live:
                continue  # nobody else can be announcing it: no owner, us, or gone
            held.add(ip)
        return held


class Agreement:
    """What this node may take now, given the peers' digests."""

    def __init__(self, me: str, patience: float) -> None:
        self.me = me
        self.patience = patience
        self.differing: frozenset[str] = frozenset()
        self._since: float | None = None  # when the views started to differ
        self._agreed: dict[str, str] | None = None  # IP -> owner, as of the last moment all views agreed

    def observe(self, mine: str, peers: Mapping[str, str], decided: Mapping[str, str], now: float) -> None:
        """Our digest, the ready peers' digests ("" = unknown: not counted) and our IP -> owner map."""
        self.differing = frozenset(n for n, v in peers.items() if v and v != mine)
        if self.differing:
            if self._since is None:
                self._since = now
        else:
            self._since = None
            self._agreed = dict(decided)

    def impatient(self, now: float) -> bool:
        """The views have differed for longer than we wait."""
        return self._since is not None and now - self._since >= self.patience

    def verdict(self, now: float) -> Verdict:
        # observe() replaces _agreed, never changes it in place: a read-only view of it stays true.
        agreed = None if self._agreed is None else MappingProxyType(self._agreed)
        return Verdict(self.me, bool(self.differing) and not self.impatient(now), agreed)
