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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client

from leifur.announce import interfaces, plan
from leifur.announce.agreement import Agreement, Verdict, digest, owners
from leifur.kube import timestamps
from leifur.kube.events import EventRecorder
from leifur.kube.logfields import fields
from leifur.kube.metrics import family
from leifur.model import names
from leifur.model.settings import AgentSettings

from . import conflicts, heartbeat_wire, metrics, prober, step
from .bgp import Speaker
from .caches import Caches, peer_addresses
from .frr import FRR, FRRError
from .frr_config import Problem
from .heartbeat import Change, HeartbeatService
from .heartbeat_keys import KeyDirectory
from .links import read_links, watch_links
from .netlink import AddressFailure, NetlinkAnnouncer
from .records import ConflictRecord, Record, RecordWriter
from .responder import Responder

log = logging.getLogger(__name__)

_DEFAULTS = AgentSettings()


@dataclass(frozen=True)
class Announced:
    """An IP this node announces now, how, and since when."""

    claim: step.Claim
    since: str


@dataclass
class Probe:
    """A probe of one allocation of a new IP: running, or its result and when it came."""

    result: str | None  # step.PROBE_CLEAR / PROBE_IN_USE; None while it runs
    at: float = 0.0
    mac: str = ""
    interface: str = ""
    since: str = ""  # when a foreign host was first found using it (wall clock, for the record)


class Agent:
    def __init__(self, api_client: client.ApiClient, node: str, settings: AgentSettings = _DEFAULTS, *,
                 keys: KeyDirectory | None, load_balancer_class: str | None = None, bgp: FRR | None = None) -> None:
        self.node = node
        self.settings = settings
        self.load_balancer_class = load_balancer_class
        self.stop_event = threading.Event()
        self.ready = False
        self._dirty = threading.Event()
        self._reannounce = threading.Event()

        self.caches = Caches(api_client, node, self.wake, bgp=bgp is not None)
        # BGP mode (agent/bgp.py): the node's FRR, beside layer 2 and independent of its election.
        self.speaker = Speaker(bgp, node, report=self._bgp_problem) if bgp is not None else None
        self._bgp_failure = ""  # the last failure to apply or read, logged once

        self.heartbeat = HeartbeatService(node, settings.heartbeat, keys=keys,
                                          accept_unsigned=settings.heartbeat.accept_unsigned,
                                          on_change=self._membership_changed)
        self.netlink = NetlinkAnnouncer()
        self.announcers = Announcers(self.netlink, lambda ifname: Responder(
            ifname, on_conflict=lambda ip, mac: self._conflict(ip, mac, ifname)))
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
        self._own_lost = interfaces.Lost()  # what our down links keep us from announcing (logged on change)
        # Address conflicts (conflicts.py decides; see docs/agent.md#address-conflicts).
        cs = settings.conflicts
        self.defence = conflicts.Defence(cs.defend_interval, cs.clear_after, cs.policy)
        self._foreign_lock = threading.Lock()
        self._foreign: list[tuple[str, str, str, float]] = []  # (ip, mac, interface, when) from responder threads
        self._probes: dict[tuple[str, tuple[str, ...]], Probe] = {}  # conflicts.probe_key -> probe
        self._prober = ThreadPoolExecutor(max_workers=2, thread_name_prefix="probe")
        # The probes the last sync waits for: one queued for an IP that is no longer ours by its
        # turn (an agent ready before its peers claims every new IP for a moment) is not run.
        self._probes_wanted: frozenset[tuple[str, tuple[str, ...]]] = frozenset()
        self._announced_ever: set[str] = set()  # IPs this process announced: never new again
        self._in_use_reported: dict[str, str] = {}  # ip -> the InUse Event sent (to send each once)
        self._claimed: dict[str, tuple[str, str]] = {}  # ip -> (interface, since) of persistent claims reported
        # (inputs, decisions, digest) of the last decisions made: see _decide.
        self._decided: tuple[tuple[int, frozenset[str], dict[str, interfaces.Lost]],
                             Mapping[str, plan.Decision], str] | None = None

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
        watch_links(self.wake, self.stop_event)
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
        """Withdraw the BGP routes and wait until the peers have been told (the node still
        forwards meanwhile, so the router moves the traffic without loss); then hand over layer 2:
        tell peers first, so they announce while we still answer, then go quiet."""
        was_ready = self.ready
        self.ready = False
        if self.speaker is not None:
            self.speaker.withdraw(self.settings.bgp_withdraw_timeout)
            try:
                self.records.set_bgp(self.speaker.read())  # the sessions stay up, advertising nothing
            except FRRError as e:
                log.warning("BGP: %s", e)
        if was_ready:
            self.heartbeat.leave()
            time.sleep(self.settings.handover_grace)
        self.announcers.close()
        metrics.OWNERSHIP_CHANGES.labels("lost").inc(len(self.announced))
        self.announced.clear()
        self.records.set([])
        self.records.set_conflicts([])  # this node no longer owns anything: its findings go with it
        self.records.flush(2.0)
        self.records.stop()
        self.recorder.stop(2.0)
        self._prober.shutdown(wait=False, cancel_futures=True)
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
        generation = self.caches.generation
        cluster = self.caches.cluster()
        self.heartbeat.set_peers(peer_addresses(cluster.nodes, self.node))
        self.heartbeat.catch_up()
        alive = self.heartbeat.peers_alive()
        metrics.PEERS.labels("alive").set(len(alive))
        metrics.PEERS.labels("ready").set(len(self.heartbeat.eligible()))
        if not self.ready:
            return
        live = self.live_nodes(cluster.nodes)
        links = tuple(read_links())
        self.records.set_macs([link.mac for link in links if link.mac and not link.loopback])
        lost = self._lost(cluster, links)
        decisions, view = self._decide(generation, cluster, frozenset(live), lost)
        self.heartbeat.set_view(view)
        verdict = self._observe_agreement(view, decisions)
        starting = self.heartbeat.starting(self.settings.start_reserve_for_peers)
        now = time.monotonic()
        owned = {ip: d for ip, d in decisions.items() if d.announcement and d.announcement.node == self.node}
        peer_macs = self.caches.peer_macs()
        self._defend(owned, peer_macs, now)
        new, probed = self._new_ips(owned, now)
        outcome = step.step(step.Inputs(self.node, cluster, live, decisions, frozenset(self.announced), verdict,
                                        starting, links, self.load_balancer_class, self._owners,
                                        new=new, probed=probed, yielded=self.defence.yielded(now), lost=lost))
        self._owners = owners(decisions)
        self._probe(outcome, peer_macs, now)
        self._report_conflicts(owned, outcome, now)
        self._log_held(outcome.held(step.HELD_FOR_AGREEMENT))
        self._report_unannounceable(outcome)
        self._apply(outcome.claims, {link.name: link for link in links})
        self._sync_bgp(cluster, generation)
        self.records.check(self.caches.record.get(self.node), self.caches.record.has_synced())
        self.last_sync = time.monotonic()

    def _sync_bgp(self, cluster: plan.Cluster, generation: int) -> None:
        """The node's BGP intent into FRR, its sessions into the record. A daemon that cannot be
        reached is logged and tried again at the next sync; layer 2 goes on regardless."""
        if self.speaker is None:
            return
        try:
            sessions = self.speaker.sync(cluster, self.load_balancer_class, self.caches, generation)
        except FRRError as e:
            if str(e) != self._bgp_failure:
                log.warning("BGP: %s", e)
            self._bgp_failure = str(e)
            return
        if self._bgp_failure:
            log.info("BGP: the routing daemon answers again")
            self._bgp_failure = ""
        if sessions is not None:
            self.records.set_bgp(sessions)

    def _bgp_problem(self, p: Problem) -> None:
        peer = self.caches.bgp[0].get(p.peer) if p.peer and self.caches.bgp else None
        if peer is not None:
            self.recorder.event(peer, "Warning", names.REASON_BGP_NOT_CONFIGURED, f"node {self.node}: {p.message}")

    def _decide(self, generation: int, cluster: plan.Cluster, live: frozenset[str],
                lost: dict[str, interfaces.Lost]) -> tuple[Mapping[str, plan.Decision], str]:
        """The decisions and their digest: the last ones again if their inputs are the same (the
        caches' generation, the live nodes, what links lost), else made anew."""
        inputs = (generation, live, lost)
        if self._decided is None or self._decided[0] != inputs:
            # Nodes leaving the same cluster move only their own IPs: a failover need not wait
            # for every IP to be decided again (at 5,000 Services, most of the sync's time).
            last = self._decided
            before = (last[0][1], last[1]) if last and (last[0][0], last[0][2]) == (generation, lost) else None
            decisions = plan.decide_announcements(cluster, live, self.load_balancer_class, lost, before=before)
            self._decided = (inputs, decisions, digest(decisions))
            metrics.DECISIONS.labels("made").inc()
        else:
            metrics.DECISIONS.labels("reused").inc()
        return self._decided[1], self._decided[2]

    def _lost(self, cluster: plan.Cluster, links: tuple[interfaces.Link, ...]) -> dict[str, interfaces.Lost]:
        """What down links keep nodes from announcing, ours told to the peers: they elect around it."""
        mine = heartbeat_wire.fit(self.node, interfaces.lost(links, sorted(plan.interface_lists(cluster, self.node))))
        if mine != self._own_lost:
            if mine:
                log.warning("links down: this node cannot announce in %s; its peers take those IPs over",
                            ", ".join([str(n) for n in mine.subnets] + ["/".join(n) for n in mine.named]))
            else:
                log.info("links back up: this node can announce everywhere again")
            self._own_lost = mine
        self.heartbeat.set_lost(mine)
        self.records.set_lost(mine)
        return {**self.heartbeat.lost(), **({self.node: mine} if mine else {})}

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
                self._announced_ever.add(ip)
        for ip in before.keys() - after.keys():
            metrics.OWNERSHIP_CHANGES.labels("lost").inc()
            gone = before[ip].claim
            log.info("stopped announcing %s", ip, extra=fields(
                ip=ip, service=gone.decision.services, pool=gone.decision.pool, interface=gone.interfaces))
        self.announced = after
        for mode in ("Responder", "Netlink"):
            for version, separator in ((4, "."), (6, ":")):
                metrics.ANNOUNCED.labels(family(version), mode).set(
                    sum(1 for ip, a in after.items() if a.claim.mode == mode and separator in ip))
        if after != before:
            self.records.set([Record(ip, a.claim.decision.services, a.claim.decision.pool, a.claim.interfaces,
                                     a.claim.mode, a.since) for ip, a in after.items()])

    def _gained(self, ip: str, claim: step.Claim) -> None:
        metrics.OWNERSHIP_CHANGES.labels("gained").inc()
        self._problems.pop(ip, None)
        message = f"announcing {ip} from node {self.node} on {', '.join(claim.interfaces)} ({claim.mode})"
        log.info(message, extra=fields(ip=ip, service=claim.decision.services, pool=claim.decision.pool,
                                       interface=claim.interfaces))
        for key in claim.decision.services:
            self._event(key, "Normal", names.REASON_NODE_ASSIGNED, message)

    def _problem(self, d: plan.Decision, message: str) -> None:
        if self._problems.get(d.ip) == message:
            return
        self._problems[d.ip] = message
        log.warning("cannot announce %s: %s", d.ip, message, extra=fields(ip=d.ip, service=d.services, pool=d.pool))
        for key in d.services:
            self._event(key, "Warning", names.REASON_NOT_ANNOUNCED, f"node {self.node}: {message}")

    def _event(self, key: str, type_: str, reason: str, message: str) -> None:
        svc = self.caches.services.get(key)
        if svc is not None:
            self.recorder.event(svc, type_, reason, message)

    def _conflict(self, ip: str, mac: str, interface: str) -> None:
        # Called from a responder thread (at most once a second per IP and MAC): the sync decides.
        now = time.monotonic()
        if now - self._conflict_logged.get(ip, -1e9) >= 10:
            self._conflict_logged[ip] = now
            log.warning("another host (%s) claims %s, which this node announces", mac, ip,
                        extra=fields(ip=ip, interface=interface))
        with self._foreign_lock:
            if len(self._foreign) < 1024:  # a flood of forged MACs must not grow this without bound
                self._foreign.append((ip, mac, interface, now))
        self._dirty.set()

    # -- address conflicts --------------------------------------------------------------------

    def _defend(self, owned: Mapping[str, plan.Decision], peer_macs: frozenset[bytes], now: float) -> None:
        """Foreign claims since the last sync, through the defence (conflicts.Defence)."""
        with self._foreign_lock:
            claims, self._foreign = self._foreign, []
        peers = {":".join(f"{b:02x}" for b in m) for m in peer_macs}
        for ip, mac, interface, when in claims:
            if mac in peers or ip not in self.announced:
                continue  # a handover between our nodes, or not ours any more
            action = self.defence.claim(ip, mac, when)
            if action in (conflicts.DEFEND, conflicts.REPORT_AND_DEFEND):
                log.info("defending %s against %s with a gratuitous announcement", ip, mac,
                         extra=fields(ip=ip, interface=interface))
                self.announcers.announce_once(ip)
            if action in (conflicts.REPORT, conflicts.REPORT_AND_DEFEND) and ip not in self._claimed:
                self._claimed[ip] = (interface, timestamps.now())
                then = ("this node keeps announcing it" if self.defence.policy == conflicts.POLICY_DEFEND
                        else "this node stops announcing it until the claims stop")
                message = (f"{ip} is claimed by a host outside the cluster ({mac}) on node {self.node} "
                           f"{interface}, again within {self.defence.defend_interval:.0f} s of our defence: {then}")
                d = owned.get(ip)
                log.warning(message, extra=fields(ip=ip, interface=interface, service=d.services if d else None))
                for key in d.services if d else ():
                    self._event(key, "Warning", names.REASON_ADDRESS_CLAIMED, message)
        self.defence.forget(owned.keys())
        self.defence.expire(now)
        for ip in self._claimed.keys() - self.defence.conflicts(now).keys():
            del self._claimed[ip]
            log.info("no more foreign claims of %s", ip, extra=fields(ip=ip))

    def _allocation(self, d: plan.Decision) -> tuple[str, tuple[str, ...]]:
        uids = []
        for key in d.services:
            svc = self.caches.services.get(key)
            uids.append(str((svc or {}).get("metadata", {}).get("uid") or key))
        return conflicts.probe_key(d.ip, uids)

    def _new_ips(self, owned: Mapping[str, plan.Decision], now: float) -> tuple[frozenset[str], dict[str, str]]:
        """The owned IPs to probe before their first announcement, and the probe results there are."""
        if self.settings.conflicts.probe_count == 0:
            return frozenset(), {}
        new = conflicts.new_ips(owned.keys() - self.announced.keys(), self.caches.recorded_ips(), self._owners,
                                self.node, self._announced_ever)
        keys = {self._allocation(owned[ip]) for ip in new}
        clear_after = self.settings.conflicts.clear_after
        for key, p in list(self._probes.items()):
            # Forget what is no longer new, and a finding old enough to look again.
            if p.result is not None and (key not in keys or (p.result == step.PROBE_IN_USE
                                                             and now - p.at >= clear_after)):
                del self._probes[key]
        probed = {}
        for ip in new:
            found = self._probes.get(self._allocation(owned[ip]))
            if found is not None and found.result is not None:
                probed[ip] = found.result
        return new, probed

    def _probe(self, outcome: step.Outcome, peer_macs: frozenset[bytes], now: float) -> None:
        wanted = {ip: self._allocation(outcome.withheld[ip].decision) for ip in outcome.held(step.PROBING)}
        self._probes_wanted = frozenset(wanted.values())
        for ip, key in wanted.items():
            w = outcome.withheld[ip]
            if key in self._probes:
                continue
            self._probes[key] = Probe(None)
            log.info("probing the LAN for %s on %s before announcing it", ip, ", ".join(w.interfaces),
                     extra=fields(ip=ip, interface=w.interfaces, service=w.decision.services))
            self._prober.submit(self._run_probe, key, ip, w.interfaces, peer_macs)

    def _run_probe(self, key: tuple[str, tuple[str, ...]], ip: str, ifaces: tuple[str, ...],
                   ours: frozenset[bytes]) -> None:
        if key not in self._probes_wanted:
            # Not waited for any more: forgotten, so that a sync that wants it again submits it again.
            self._probes.pop(key, None)
            return
        cs = self.settings.conflicts
        found: prober.ProbeResult | None = None
        failed = False
        for ifname in ifaces:
            try:
                r = prober.probe(ifname, ip, ours, count=cs.probe_count, interval=cs.probe_interval,
                                 wait=cs.probe_wait, stop=self.stop_event)
            except Exception as e:
                # Fail open: a probe we cannot send must not keep a Service dark.
                log.warning("cannot probe for %s on %s (announcing it without): %s", ip, ifname, e,
                            extra=fields(ip=ip, interface=ifname))
                failed = True
                continue
            if r.in_use:
                found = r
                break
        result = step.PROBE_IN_USE if found else step.PROBE_CLEAR
        metrics.PROBES.labels("InUse" if found else "Failed" if failed else "Clear").inc()
        self._probes[key] = Probe(result, time.monotonic(), found.in_use_by or "" if found else "",
                                  found.interface if found else "", timestamps.now())
        if found:
            log.warning("%s is in use by a host outside the cluster (%s on %s): not announcing it", ip,
                        found.in_use_by, found.interface, extra=fields(ip=ip, interface=found.interface))
        self._dirty.set()

    def _report_conflicts(self, owned: Mapping[str, plan.Decision], outcome: step.Outcome, now: float) -> None:
        """The conflicts into our record, the metric, and (once each) an Event on the Services."""
        records: list[ConflictRecord] = []
        for ip in outcome.held(step.ADDRESS_IN_USE):
            d = outcome.withheld[ip].decision
            p = self._probes.get(self._allocation(d))
            if p is None:
                continue
            records.append(ConflictRecord(ip, p.mac, p.interface, conflicts.IN_USE, p.since, d.services))
            message = (f"{ip} is in use by a host outside the cluster ({p.mac}, answered node {self.node}'s "
                       f"probe on {p.interface}): not announced")
            if self._in_use_reported.get(ip) != message:
                self._in_use_reported[ip] = message
                for key in d.services:
                    self._event(key, "Warning", names.REASON_ADDRESS_IN_USE, message)
        for ip, c in self.defence.conflicts(now).items():
            holder = owned.get(ip)
            interface, since = self._claimed.get(ip, ("", timestamps.now()))
            records.append(ConflictRecord(ip, c.mac, interface, conflicts.CLAIMED, since,
                                          holder.services if holder else ()))
        for ip in self._in_use_reported.keys() - outcome.held(step.ADDRESS_IN_USE):
            del self._in_use_reported[ip]
        for kind in (conflicts.IN_USE, conflicts.CLAIMED):
            metrics.ADDRESS_CONFLICTS.labels(kind).set(sum(1 for r in records if r.kind == kind))
        self.records.set_conflicts(records)


class ResponderLike(Protocol):
    """What the agent needs of a Responder (a fake in the unit tests)."""

    def start(self) -> None: ...
    def close(self) -> None: ...
    def alive(self) -> bool: ...
    def set_ips(self, answer: Iterable[str], announce_only: Iterable[str] = ()) -> None: ...
    def announce(self, ips: Iterable[str] | None = None, rounds: int | None = None) -> None: ...


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
                log.warning("cannot announce on %s: %s", ifname, e, extra=fields(interface=ifname))
                for ip in ips | announce_only:
                    failed[ip] = f"cannot announce on {ifname}: {e}"
        return failed

    def announce_again(self) -> None:
        for r in self.responders.values():
            r.announce()

    def announce_once(self, ip: str) -> None:
        """One gratuitous announcement of `ip` on every interface announcing it (a defence)."""
        for r in self.responders.values():
            r.announce([ip], rounds=1)

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

