"""Liveness among agents: UDP heartbeats, node to node, never through the API server.

Every agent sends a small datagram to every peer each `interval` and considers a peer dead
when nothing arrived for `dead_after` (both in HeartbeatSettings). Nothing is written to the
API for liveness, so the API load does not grow with the failover speed.

A heartbeat carries:
- `inc`, the sender's incarnation (its start time in ns): a restarted agent is a new
  incarnation. Incarnation and sequence must move forward, so a late, duplicated or replayed
  datagram changes nothing;
- `ready`: the sender has synced its caches and waited out its start-up hold. A node is
  eligible to announce only once it says ready, so a (re)starting agent never takes IPs
  away from their owner before it can announce them itself;
- `leaving`: the sender got SIGTERM. Peers drop it at once instead of waiting for
  `dead_after`, so the new owner announces within milliseconds;
- `view`: a digest of the sender's decisions (see agreement.py), "" before its first one.
  Agents before this field existed send none, which reads as "".
- `lost`: what the sender's down links keep it from announcing (interfaces.Lost), when anything:
  its heartbeats may still flow over another network, so only it can say so.

How a datagram is signed and checked is in heartbeat_wire.py. `Membership` is the pure
bookkeeping (tested without sockets); `HeartbeatService` does the I/O.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from leifur.announce.interfaces import Lost
from leifur.model.settings import HeartbeatSettings

from . import heartbeat_wire as wire
from . import metrics
from .heartbeat_keys import KeyDirectory
from .heartbeat_wire import Heartbeat

log = logging.getLogger(__name__)

_DEFAULTS = HeartbeatSettings()


@dataclass
class _Peer:
    inc: int
    seq: int
    last: float
    ready: bool
    leaving: bool
    since: float  # when this incarnation was first heard (or heard again after being dead)
    view: str = ""
    lost: Lost = field(default_factory=Lost)


@dataclass(frozen=True)
class Change:
    """What a heartbeat or a sweep changed: `eligible` moved, which peers came back to life, and
    whether an eligible peer's `view` (or what it lost) changed. `arrived`: peers heard anew (a new incarnation, or
    alive again), which the agent logs but need not act on."""

    eligible: bool = False
    revived: frozenset[str] = frozenset()
    views: bool = False
    arrived: frozenset[str] = frozenset()
    replayed: bool = False  # refused: its incarnation and sequence did not move forward

    def __bool__(self) -> bool:
        return self.eligible or bool(self.revived) or self.views


class Membership:
    """Which peers are alive and ready, from the heartbeats heard. Pure: time is passed in."""

    def __init__(self, me: str, dead_after: float, replay_window: float = _DEFAULTS.max_age,
                 together: float = 2 * _DEFAULTS.interval) -> None:
        """`together`: peers whose last heartbeats are this close fell silent together (a heartbeat
        from each per interval, plus one of jitter); see fell_silent_together."""
        self.me = me
        self.dead_after = dead_after
        self.replay_window = replay_window
        self.together = together
        self._silent: frozenset[str] = frozenset()
        self._peers: dict[str, _Peer] = {}
        # Per node, the latest (incarnation, sequence) accepted, when, and whether it said ready and
        # not leaving: kept after the peer is dead and forgotten, so that a replay of its last
        # datagrams never brings it back.
        self._latest: dict[str, tuple[int, int, float, bool]] = {}
        self._eligible: frozenset[str] = frozenset()
        # Peers seen dead since they were last alive: their return is a partition healing or a
        # restart, after which the owner re-announces in case the peer had been answering too.
        self._was_dead: set[str] = set()

    def _alive(self, p: _Peer, now: float) -> bool:
        return not p.leaving and now - p.last <= self.dead_after

    def eligible(self, now: float) -> frozenset[str]:
        """Peers (never `me`) that are alive and ready."""
        return frozenset(n for n, p in self._peers.items() if p.ready and self._alive(p, now))

    def starting(self, now: float, within: float) -> frozenset[str]:
        """Peers alive but not ready yet, first heard less than `within` ago: agents starting up.

        A node does not take a new IP that such a peer would own, so that agents starting
        together do not all claim everything for a moment. `within` bounds the reservation: a peer
        that never becomes ready (it cannot reach the API server) stops holding IPs back.
        """
        return frozenset(n for n, p in self._peers.items()
                         if not p.ready and self._alive(p, now) and now - p.since < within)

    def alive(self, now: float) -> frozenset[str]:
        return frozenset(n for n, p in self._peers.items() if self._alive(p, now))

    def fell_silent_together(self, now: float) -> frozenset[str]:
        """The ready peers whose last heartbeats came within `together` of each other, if they are
        at least two and none was heard for half of dead_after; else none.

        Several healthy agents do not stop at the same instant: when every peer goes quiet at once,
        this node has most likely stopped hearing (its reception is cut: a firewall, a one-way
        fault), while its peers may well hear it. Taking their IPs would put a second MAC on each.
        Checked as soon as the first of them is dead, while the others are merely quiet, so that
        this node never claims the first one's IPs for a moment. A single peer's silence stays a
        failover: with two nodes the cases cannot be told apart.
        """
        # From _latest, which outlives the peers' entries: the cut may last for hours.
        last = {n: at for n, (_inc, _seq, at, serving) in self._latest.items() if serving}
        if not last or now - max(last.values()) <= self.dead_after / 2:
            return frozenset()
        latest = max(last.values())
        together = frozenset(n for n, t in last.items() if latest - t <= self.together)
        return together if len(together) >= 2 else frozenset()

    def views(self, now: float) -> dict[str, str]:
        """The last `view` of every eligible peer."""
        return {n: p.view for n, p in self._peers.items() if p.ready and self._alive(p, now)}

    def lost(self, now: float) -> dict[str, Lost]:
        """What the eligible peers that lost links said they lost."""
        return {n: p.lost for n, p in self._peers.items() if p.lost and p.ready and self._alive(p, now)}

    def heard(self, hb: Heartbeat, now: float) -> Change:
        if hb.node == self.me:
            return Change()
        if not self._moves_forward(hb, now):
            return Change(replayed=True)
        p = self._peers.get(hb.node)
        if p is not None and p.inc == hb.inc and p.leaving:
            return Change()  # a leaving incarnation never comes back
        self._latest[hb.node] = (hb.inc, hb.seq, now, hb.ready and not hb.leaving)
        revived: frozenset[str] = frozenset()
        arrived = frozenset({hb.node}) if p is None or not self._alive(p, now) or p.inc != hb.inc else frozenset()
        since = p.since if p is not None and p.inc == hb.inc else now
        if p is None or not self._alive(p, now):
            if hb.node in self._was_dead and not hb.leaving:
                revived = frozenset({hb.node})
            self._was_dead.discard(hb.node)
            since = now
        # A change of what a peer lost changes who may announce, as a view change may.
        view_changed = hb.ready and (p is None or p.view != hb.view or p.lost != hb.lost)
        self._peers[hb.node] = _Peer(hb.inc, hb.seq, now, hb.ready, hb.leaving, since, hb.view, hb.lost)
        return Change(self._refresh(now), revived, view_changed, arrived)

    def latest(self, node: str) -> tuple[int, int] | None:
        """The (incarnation, sequence) of the latest datagram accepted from `node`."""
        latest = self._latest.get(node)
        return (latest[0], latest[1]) if latest else None

    def _moves_forward(self, hb: Heartbeat, now: float) -> bool:
        latest = self._latest.get(hb.node)
        if latest is None:
            return True
        inc, seq, at, _serving = latest
        if hb.inc != inc:
            # An older incarnation is a replay, or a restart whose clock went back (the incarnation
            # is a start time). Only a silence longer than the replay window tells them apart: a
            # replayed datagram would be older than that, and stale.
            return hb.inc > inc or now - at > self.replay_window
        return hb.seq > seq

    def forget(self, keep: Iterable[str]) -> None:
        """Drop what we know of nodes not in `keep` (their Node objects are gone)."""
        keep = set(keep)
        for node in list(self._peers):
            if node not in keep:
                del self._peers[node]
        for node in list(self._latest):
            if node not in keep:
                del self._latest[node]
        self._was_dead &= keep

    def sweep(self, now: float) -> Change:
        """Expire peers not heard for `dead_after`; call it a few times per `dead_after`."""
        for node, p in list(self._peers.items()):
            if not self._alive(p, now):
                self._was_dead.add(node)
            if now - p.last > 60 * self.dead_after + 60:
                del self._peers[node]  # forget long-gone peers (but remember they were dead)
        # A change of the peers presumed alive is one of who may announce: the agent must decide
        # again, also when a quiet peer is heard again and a failover held back by it can go on.
        silent = self.fell_silent_together(now)
        presumed_changed = silent != self._silent
        self._silent = silent
        return Change(self._refresh(now) or presumed_changed)

    def _refresh(self, now: float) -> bool:
        eligible = self.eligible(now)
        changed = eligible != self._eligible
        self._eligible = eligible
        return changed


class HeartbeatService:
    """Sends our heartbeats to the peers' addresses and feeds what it hears into a Membership.

    `on_change(change)` runs on the service's thread whenever the eligible set moves or a peer
    revives; it must be cheap (the agent only wakes its sync loop).
    """

    def __init__(self, me: str, settings: HeartbeatSettings = _DEFAULTS, *, keys: KeyDirectory | None,
                 accept_unsigned: bool = False, bind: str = "::",
                 on_change: Callable[[Change], None] = lambda _c: None) -> None:
        """`keys` None: authentication off (unsigned datagrams only). `accept_unsigned`: a rollout
        from agents that do not sign; also send unsigned copies, and accept them from nodes not
        yet heard signing."""
        self.me = me
        self.port = settings.port
        self.interval = settings.interval
        self.membership = Membership(me, settings.dead_after, settings.max_age, 2 * settings.interval)
        self.keys = keys
        self.accept_unsigned = accept_unsigned
        self._max_age_ms = int(settings.max_age * 1000)
        self._signing: set[str] = set()  # nodes heard signing: their unsigned datagrams are forgeries
        self.on_change = on_change
        self.inc = time.time_ns()
        self._seq = 0
        self._ready = False
        self._leaving = False
        self._view = ""
        self._lost = Lost()
        self._targets: tuple[tuple[str, int], ...] = ()
        self._addresses: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # one socket for both families
        # No SO_REUSEADDR: a second agent on the same port must fail loudly, not silently steal
        # every heartbeat (Linux delivers unicast datagrams to the socket bound last).
        self._sock.bind((bind, settings.port))
        self._sock.settimeout(min(settings.interval, settings.dead_after / 4))
        # The same socket, never waiting: catch_up() reads what is queued without racing the
        # receive thread into a wait.
        self._queued = socket.socket(fileno=os.dup(self._sock.fileno()))
        self._queued.setblocking(False)
        self._threads: list[threading.Thread] = []
        self._sent = metrics.HEARTBEATS.labels("sent")
        self._received = metrics.HEARTBEATS.labels("received")
        self._rejected = {reason: metrics.HEARTBEATS_REJECTED.labels(reason) for reason in wire.REASONS}

    # -- controls ---------------------------------------------------------------------------

    def set_peers(self, addresses: Mapping[str, str]) -> None:
        """Peers' node names -> IP addresses (IPv4 or IPv6), from their Node objects.

        Heartbeats are accepted only from a known node's own address: anyone on the LAN can reach
        the port, and a stranger's datagram must not make up a peer or end one.
        """
        by_name = {node: _v6_mapped(addr) for node, addr in addresses.items()}
        targets = tuple(sorted({(a, self.port) for a in by_name.values()}))
        with self._lock:
            self._targets = targets
            self._addresses = by_name
            self.membership.forget(by_name)

    def set_ready(self, ready: bool) -> None:
        with self._lock:
            changed = self._ready != ready
            self._ready = ready
        if changed:
            self._send_all()  # peers learn at once, not at the next tick

    def set_view(self, view: str) -> None:
        """Our decisions' digest; sent at once when it changes, since a peer may be waiting for it."""
        with self._lock:
            changed = self._view != view
            self._view = view
        if changed:
            self._send_all()

    def set_lost(self, lost: Lost) -> None:
        """What our down links keep us from announcing; sent at once when it changes (peers take
        over what we lost)."""
        with self._lock:
            changed = self._lost != lost
            self._lost = lost
        if changed:
            self._send_all()

    def views(self) -> dict[str, str]:
        with self._lock:
            return self.membership.views(time.monotonic())

    def lost(self) -> dict[str, Lost]:
        with self._lock:
            return self.membership.lost(time.monotonic())

    def eligible(self) -> frozenset[str]:
        with self._lock:
            return self.membership.eligible(time.monotonic())

    def starting(self, within: float) -> frozenset[str]:
        with self._lock:
            return self.membership.starting(time.monotonic(), within)

    def peers_alive(self) -> frozenset[str]:
        with self._lock:
            return self.membership.alive(time.monotonic())

    def fell_silent_together(self) -> frozenset[str]:
        with self._lock:
            return self.membership.fell_silent_together(time.monotonic())

    def leave(self, copies: int = 3) -> None:
        """Tell every peer we are going (SIGTERM): several copies, in case one is lost."""
        with self._lock:
            self._leaving = True
        for _ in range(copies):
            self._send_all()
            time.sleep(0.002)

    # -- threads ----------------------------------------------------------------------------

    def start(self) -> None:
        for fn, name in ((self._send_loop, "heartbeat-send"), (self._receive_loop, "heartbeat-receive")):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        with contextlib.suppress(OSError):
            self._sock.close()
        with contextlib.suppress(OSError):
            self._queued.close()

    def _send_all(self) -> None:
        ring = self.keys.ring() if self.keys else None
        with self._lock:
            self._seq += 1
            hb = Heartbeat(self.me, self.inc, self._seq, self._ready, self._leaving, self._view,
                           time.time_ns() // 1_000_000, self._lost)
            targets = self._targets
        datagrams = [hb.seal(ring.signing)] if ring else []
        if ring is None or self.accept_unsigned:
            datagrams.append(hb.encode())
        for target in targets:
            for data in datagrams:
                try:
                    self._sock.sendto(data, target)
                    self._sent.inc()
                except OSError as e:  # a peer's network unreachable must not stop the others
                    log.debug("heartbeat to %s failed: %s", target[0], e)

    def _send_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._send_all()
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # we were descheduled: do not burst to catch up
                next_at, delay = time.monotonic(), 0
            self._stop.wait(delay)

    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._take(self._receive())
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.01)

    def catch_up(self) -> None:
        """Take in the heartbeats already queued on the socket before deciding from them.

        On a loaded CPU the receive thread can fall behind; peers whose datagrams wait unread
        would look dead, and their IPs would be taken from them.
        """
        with contextlib.suppress(BlockingIOError):
            while True:
                self._take(self._receive(self._queued))

    def _receive(self, sock: socket.socket | None = None) -> Heartbeat | None:
        """One datagram, checked; None if none came or it was refused (counted by reason)."""
        try:
            data, addr = (sock or self._sock).recvfrom(wire.MAX_DATAGRAM + 1)
        except TimeoutError:
            return None
        checked = self._check(data, addr[0])
        if isinstance(checked, str):
            if checked:
                self._rejected[checked].inc()
            return None
        return checked

    def _check(self, data: bytes, source: str) -> Heartbeat | str:
        """The heartbeat, or why it is refused ("" for a rollout twin, dropped without counting)."""
        # Unsigned datagrams are read in any case, to tell a forgery from a peer's rollout twin below.
        opened = wire.open_datagram(data, self.keys.ring() if self.keys else None, accept_unsigned=True,
                                    now_ms=time.time_ns() // 1_000_000, max_age_ms=self._max_age_ms)
        if isinstance(opened, str):
            return opened
        address = self._addresses.get(opened.node)
        if address is None:
            return wire.UNKNOWN_NODE
        if address != _v6_mapped(source):
            return wire.WRONG_ADDRESS
        if self.keys is None:
            return opened
        if data.startswith(wire.MAGIC2):
            self._signing.add(opened.node)
            return opened
        if opened.node in self._signing:
            with self._lock:
                latest = self.membership.latest(opened.node)
            # The unsigned copy of a signed datagram taken already: a peer still in its rollout.
            return "" if latest is not None and (opened.inc, opened.seq) <= latest else wire.UNAUTHENTICATED
        return opened if self.accept_unsigned else wire.UNAUTHENTICATED

    def _take(self, hb: Heartbeat | None) -> None:
        with self._lock:
            now = time.monotonic()
            change = self.membership.heard(hb, now) if hb else Change()
            sweep = self.membership.sweep(now)
        if change.replayed:
            self._rejected[wire.REPLAYED].inc()
        elif hb:
            self._received.inc()
        for node in change.arrived:
            # Peers' join times, in every agent's log: when it began to reserve a starting peer's IPs.
            log.info("heard %s (%s)", node, "leaving" if hb and hb.leaving else
                     "ready" if hb and hb.ready else "starting")
        merged = Change(change.eligible or sweep.eligible, change.revived, change.views)
        if merged:
            try:
                self.on_change(merged)
            except Exception:
                log.exception("heartbeat change handler failed")


def _v6_mapped(address: str) -> str:
    """The form recvfrom() on our dual-stack socket reports a sender's address in."""
    addr = ipaddress.ip_address(address.split("%")[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # Python < 3.13 prints a mapped address in hex groups
    return f"::ffff:{addr}" if addr.version == 4 else str(addr)
