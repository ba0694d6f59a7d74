"""Wiring of the agent: informers and heartbeats wake one sync loop, which reads what it needs,
decides what to claim (step.step, pure) and applies that to the announcers (responders, netlink)
and the ownership record.

The agent is level-triggered: every change (an object, a peer's liveness) marks the state dirty
and one sync recomputes what this node announces from everything it knows. Decisions cover
all IPs at once (a peer's death moves many IPs), and recomputing from scratch costs well under
a millisecond per hundred Services, so a per-key work queue would buy nothing here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client

from leifur.announce import interfaces, plan
from leifur.announce.agreement import Agreement, Verdict, digest, owners
from leifur.kube import timestamps
from leifur.kube.events import EventRecorder
from leifur.model import names
from leifur.model.settings import AgentSettings

from . import metrics, step
from .caches import Caches, peer_addresses
from .heartbeat import Change, HeartbeatService
from .heartbeat_keys import KeyDirectory
from .links import read_links
from .netlink import AddressFailure, NetlinkAnnouncer
from .records import Record, RecordWriter
from .responder import Responder

log = logging.getLogger(__name__)

_DEFAULTS = AgentSettings()


@dataclass(frozen=True)
class Announced:
    """An IP this node announces now, how, and since when."""

    claim: step.Claim
    since: str


class Agent:
    def __init__(self, api_client: client.ApiClient, node: str, settings: AgentSettings = _DEFAULTS, *,
                 keys: KeyDirectory | None, load_balancer_class: str | None = None) -> None:
        self.node = node
        self.settings = settings
        self.load_balancer_class = load_balancer_class
        self.stop_event = threading.Event()
        self.ready = False
        self._dirty = threading.Event()
        self._reannounce = threading.Event()

        self.caches = Caches(api_client, node, self.wake)

        self.heartbeat = HeartbeatService(node, settings.heartbeat, keys=keys,
                                          accept_unsigned=settings.heartbeat.accept_unsigned,
                                          on_change=self._membership_changed)
        self.netlink = NetlinkAnnouncer()
        self.announcers = Announcers(self.netlink, lambda ifname: Responder(ifname, on_conflict=self._conflict))
        self.last_sync = 0.0
        self.recorder = EventRecorder(api_client, names.AGENT_NAME, host=node)
        self.records = RecordWriter(api_client, node, self.caches.node_uid)
        self.announced: dict[str, Announced] = {}
        self.agreement = Agreement(node, settings.agreement_patience)
        self._owners: dict[str, str] = {}  # IP -> owner, as decided at the previous sync
        self._held: frozenset[str] = frozenset()  # IPs waiting for the peers' views (logged on change)
        self._problems: dict[str, str] = {}  # ip -> last problem reported (to report each once)
        self._conflict_logged: dict[str, float] = {}
        self._presumed: frozenset[str] = frozenset()  # peers presumed alive though silent (logged on change)

    # -- signals from other threads -----------------------------------------------------------

    def wake(self) -> None:
        self._dirty.set()

    def stop(self) -> None:
        """Ask run() to hand over and return (safe from a signal handler)."""
        self.stop_event.set()
        self._dirty.set()

    def _membership_changed(self, change: Change) -> None:
        if change.revived:
            # A peer that was cut off may have answered for our IPs meanwhile: claim them again.
            log.info("peers back: %s", ", ".join(sorted(change.revived)))
            self._reannounce.set()
        self._dirty.set()

    # -- life cycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Announce until stop_event is set, then hand over and clean up."""
        removed = self.netlink.cleanup()
        if removed:
            log.info("removed %d leftover address(es) of a previous run: %s", len(removed), removed)
        self.heartbeat.start()
        self.caches.start()
        self.records.start()
        # Peers learn we are starting from our not-ready heartbeats, sent as soon as the Nodes say
        # where they are: the reserve they keep for our IPs must cover the rest of our caches' sync
        # (seconds on a loaded node), not begin after it.
        told = False
        while not self.stop_event.is_set() and not self.caches.synced():
            if not told and self.caches.nodes.has_synced():
                self.heartbeat.set_peers(self.caches.peer_addresses())
                told = True
            self.stop_event.wait(0.05)
        # We hear every live peer at least twice before we claim.
        self.heartbeat.set_peers(self.caches.peer_addresses())
        self.stop_event.wait(self.settings.heartbeat.start_hold)
        if not self.stop_event.is_set():
            self.ready = True
            self.last_sync = time.monotonic()
            self.heartbeat.set_ready(True)
            log.info("ready: announcing as %s", self.node)
        while not self.stop_event.is_set():
            self._dirty.wait(self.settings.resync)
            if self.stop_event.is_set():
                break
            self._dirty.clear()
            try:
                self.sync()
            except Exception:
                log.exception("sync failed; retrying")
                time.sleep(0.1)
                self._dirty.set()
        self.shutdown()

    def shutdown(self) -> None:
        """Hand over: tell peers first, so they announce while we still answer, then go quiet."""
        was_ready = self.ready
        self.ready = False
        if was_ready:
            self.heartbeat.leave()
            time.sleep(self.settings.handover_grace)
        self.announcers.close()
        metrics.OWNERSHIP_CHANGES.labels("lost").inc(len(self.announced))
        self.announced.clear()
        self.records.set([])
        self.records.flush(2.0)
        self.records.stop()
        self.recorder.stop(2.0)
        self.heartbeat.stop()
        self.caches.stop()

    def healthy(self) -> bool:
        """Heartbeats flow and, once ready, syncs keep succeeding (a stuck sync is a restart's job)."""
        if not self.heartbeat.alive():
            return False
        return not self.ready or time.monotonic() - self.last_sync < 30

    # -- the sync ---------------------------------------------------------------------------------

    def live_nodes(self, nodes: list[dict[str, Any]]) -> frozenset[str]:
        own = {self.node} if self.ready else set()
        presumed = step.presumed_alive(self.heartbeat.fell_silent_together(), nodes)
        if presumed != self._presumed:
            if presumed:
                log.warning("hearing none of %s, which all fell silent at once: presuming them alive (this node "
                            "may have stopped hearing heartbeats) until they are heard again or their Node is "
                            "not Ready", ", ".join(sorted(presumed)))
            elif self._presumed:
                log.info("no longer presuming %s alive", ", ".join(sorted(self._presumed)))
            self._presumed = presumed
        metrics.PEERS.labels("presumed").set(len(presumed))
        return self.heartbeat.eligible() | own | presumed

    def sync(self) -> None:
        """Read, decide (step.step, pure), apply, record, report."""
        cluster = self.caches.cluster()
        self.heartbeat.set_peers(peer_addresses(cluster.nodes, self.node))
        self.heartbeat.catch_up()
        alive = self.heartbeat.peers_alive()
        metrics.PEERS.labels("alive").set(len(alive))
        metrics.PEERS.labels("ready").set(len(self.heartbeat.eligible()))
        if not self.ready:
            return
        live = self.live_nodes(cluster.nodes)
        decisions = plan.decide_announcements(cluster, live, self.load_balancer_class)
        view = digest(decisions)
        self.heartbeat.set_view(view)
        verdict = self._observe_agreement(view, decisions)
        starting = self.heartbeat.starting(self.settings.start_reserve_for_peers)
        links = tuple(read_links())
        outcome = step.step(step.Inputs(self.node, cluster, live, decisions, frozenset(self.announced), verdict,
                                        starting, links, self.load_balancer_class, self._owners))
        self._owners = owners(decisions)
        self._log_held(outcome.held(step.HELD_FOR_AGREEMENT))
        self._report_unannounceable(outcome)
        self._apply(outcome.claims, {link.name: link for link in links})
        self.records.check(self.caches.record.get(self.node), self.caches.record.has_synced())
        self.last_sync = time.monotonic()

    def _observe_agreement(self, view: str, decisions: Mapping[str, plan.Decision]) -> Verdict:
        """Our view and the peers' into the agreement; its answer now."""
        now = time.monotonic()
        was_impatient = self.agreement.impatient(now)
        self.agreement.observe(view, self.heartbeat.views(), owners(decisions), now)
        metrics.PEERS.labels("differing").set(len(self.agreement.differing))
        if self.agreement.impatient(now) and not was_impatient:
            log.warning("peers %s still decide differently after %.0f s: announcing without them",
                        ", ".join(sorted(self.agreement.differing)), self.agreement.patience)
        return self.agreement.verdict(now)

    def _log_held(self, held: frozenset[str]) -> None:
        if held and held != self._held:
            log.info("waiting for %s to see what this node sees before announcing %s",
                     ", ".join(sorted(self.agreement.differing)), ", ".join(sorted(held)))
        self._held = held

    def _report_unannounceable(self, outcome: step.Outcome) -> None:
        for w in outcome.withheld.values():
            if w.reason == step.NO_INTERFACE:
                self._problem(w.decision, w.message)
        for ip in self._problems.keys() - outcome.due:
            del self._problems[ip]  # not ours any more: report afresh if it comes back

    def _apply(self, claims: Mapping[str, step.Claim], links: Mapping[str, interfaces.Link]) -> None:
        announcing = dict(claims)
        for ip, why in self.announcers.apply(claims, links).items():
            if ip in announcing:
                self._problem(announcing.pop(ip).decision, why)
        if self._reannounce.is_set():
            self._reannounce.clear()
            self.announcers.announce_again()
        self._record_changes(announcing)

    def _record_changes(self, claims: Mapping[str, step.Claim]) -> None:
        before = self.announced
        after: dict[str, Announced] = {}
        for ip, claim in claims.items():
            old = before.get(ip)
            if old is not None and old.claim == claim:
                after[ip] = old
                continue
            after[ip] = Announced(claim, old.since if old else timestamps.now())
            if old is None:
                self._gained(ip, claim)
        for ip in before.keys() - after.keys():
            metrics.OWNERSHIP_CHANGES.labels("lost").inc()
            log.info("stopped announcing %s", ip)
        self.announced = after
        for mode in ("Responder", "Netlink"):
            for family, version in (("ipv4", "."), ("ipv6", ":")):
                metrics.ANNOUNCED.labels(family, mode).set(
                    sum(1 for ip, a in after.items() if a.claim.mode == mode and version in ip))
        if after != before:
            self.records.set([Record(ip, a.claim.decision.services, a.claim.decision.pool, a.claim.interfaces,
                                     a.claim.mode, a.since) for ip, a in after.items()])

    def _gained(self, ip: str, claim: step.Claim) -> None:
        metrics.OWNERSHIP_CHANGES.labels("gained").inc()
        self._problems.pop(ip, None)
        message = f"announcing {ip} from node {self.node} on {', '.join(claim.interfaces)} ({claim.mode})"
        log.info(message)
        for key in claim.decision.services:
            self._event(key, "Normal", names.REASON_NODE_ASSIGNED, message)

    def _problem(self, d: plan.Decision, message: str) -> None:
        if self._problems.get(d.ip) == message:
            return
        self._problems[d.ip] = message
        log.warning("cannot announce %s: %s", d.ip, message)
        for key in d.services:
            self._event(key, "Warning", names.REASON_NOT_ANNOUNCED, f"node {self.node}: {message}")

    def _event(self, key: str, type_: str, reason: str, message: str) -> None:
        svc = self.caches.services.get(key)
        if svc is not None:
            self.recorder.event(svc, type_, reason, message)

    def _conflict(self, ip: str, mac: str) -> None:
        # Called from a responder thread; a flood of conflicting frames must not flood the log.
        now = time.monotonic()
        if now - self._conflict_logged.get(ip, -1e9) >= 10:
            self._conflict_logged[ip] = now
            log.warning("another host (%s) claims %s, which this node announces", mac, ip)


class ResponderLike(Protocol):
    """What the agent needs of a Responder (a fake in the unit tests)."""

    def start(self) -> None: ...
    def close(self) -> None: ...
    def alive(self) -> bool: ...
    def set_ips(self, answer: Iterable[str], announce_only: Iterable[str] = ()) -> None: ...
    def announce(self, ips: Iterable[str] | None = None) -> None: ...


class KernelAddresses(Protocol):
    """What the agent needs of the NetlinkAnnouncer (a fake in the unit tests)."""

    def set_ips(self, assignments: Mapping[str, Iterable[str]]) -> list[AddressFailure]: ...
    def cleanup(self) -> list[tuple[str, str]]: ...
    def close(self) -> None: ...


class Announcers:
    """Sets the announcers to each sync's claims: a responder per interface (ARP, NDP) and the
    kernel's addresses (netlink)."""

    def __init__(self, netlink: KernelAddresses, new_responder: Callable[[str], ResponderLike]) -> None:
        self.netlink = netlink
        self._new_responder = new_responder
        self.responders: dict[str, ResponderLike] = {}
        self._identity: dict[str, tuple[int, str] | None] = {}  # ifname -> (index, MAC) a responder opened

    def apply(self, claims: Mapping[str, step.Claim], links: Mapping[str, interfaces.Link]) -> dict[str, str]:
        """Announce each claim on its interfaces; returns ip -> why it is not announced on one of them."""
        answer, only, kernel = _by_interface(claims)
        failed: dict[str, str] = {}
        for f in self.netlink.set_ips(kernel):
            failed[f.ip] = f"{f.action} {f.ip} on {f.ifname} failed: {f.reason}"
        for ifname in sorted(set(self.responders) | set(answer) | set(only)):
            ips, announce_only = answer.get(ifname, set()), only.get(ifname, set())
            # One interface's trouble must not stop the others (nor the record of what works).
            try:
                self._apply_interface(ifname, links.get(ifname), ips, announce_only)
            except Exception as e:
                log.warning("cannot announce on %s: %s", ifname, e)
                for ip in ips | announce_only:
                    failed[ip] = f"cannot announce on {ifname}: {e}"
        return failed

    def announce_again(self) -> None:
        for r in self.responders.values():
            r.announce()

    def close(self) -> None:
        """Stop answering and take our addresses off the interfaces."""
        for r in self.responders.values():
            r.close()
        self.responders.clear()
        self.netlink.cleanup()
        self.netlink.close()

    def _apply_interface(self, ifname: str, link: interfaces.Link | None, ips: set[str], only: set[str]) -> None:
        responder = self.responders.get(ifname)
        identity = (link.index, link.mac) if link else None
        # An interface deleted and created again (ifupdown, a bond re-formed) has a new index and
        # maybe a new MAC: the old sockets are dead, so the responder starts over.
        if responder is not None and (not (ips or only) or self._identity.get(ifname) != identity
                                      or not responder.alive()):
            responder.close()
            del self.responders[ifname]
            responder = None
        if not (ips or only):
            return
        if link is None:
            raise OSError(f"interface {ifname} does not exist")
        if responder is None:
            responder = self._new_responder(ifname)
            try:
                responder.start()
            except Exception:
                responder.close()
                raise
            self.responders[ifname] = responder
            self._identity[ifname] = identity
        responder.set_ips(ips, only)


_ByInterface = dict[str, set[str]]


def _by_interface(claims: Mapping[str, step.Claim]) -> tuple[_ByInterface, _ByInterface, _ByInterface]:
    """ifname -> the IPs to answer for, those only to announce (the kernel answers), those the kernel carries."""
    answer: _ByInterface = {}
    announce_only: _ByInterface = {}
    kernel: _ByInterface = {}
    for ip, claim in claims.items():
        for ifname in claim.interfaces:
            if claim.mode == "Netlink":
                kernel.setdefault(ifname, set()).add(ip)
                announce_only.setdefault(ifname, set()).add(ip)
            else:
                answer.setdefault(ifname, set()).add(ip)
    return answer, announce_only, kernel

