"""Wiring of the agent: informers and heartbeats wake one sync loop, which decides (plan.decide_announcements)
and applies the result to the announcers (responders, netlink) and the ownership record.

The agent is level-triggered: every change (an object, a peer's liveness) marks the state dirty
and one sync recomputes what this node announces from everything it knows. Decisions cover
all IPs at once (a peer's death moves many IPs), and recomputing from scratch costs well under
a millisecond per hundred Services, so a per-key work queue would buy nothing here.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from kubernetes import client

from leifur.announce import interfaces, plan
from leifur.announce.agreement import DEFAULT_PATIENCE, Agreement, digest, owners
from leifur.kube.events import EventRecorder
from leifur.kube.informer import Informer
from leifur.model import names, timestamps

from . import metrics
from .heartbeat import Change, HeartbeatService
from .links import read_links
from .netlink import NetlinkAnnouncer
from .records import Record, RecordWriter
from .responder import Responder

log = logging.getLogger(__name__)

# Re-check links and decisions at least this often even without events (an interface came up).
_RESYNC = 1.0


@dataclass(frozen=True)
class Claim:
    """An IP this node announces now, and how."""

    decision: plan.Decision
    interfaces: tuple[str, ...]
    mode: str
    since: str


class Agent:
    def __init__(self, api_client: client.ApiClient, node: str, *, load_balancer_class: str | None = None,
                 heartbeat_port: int = 7474, heartbeat_interval: float = 0.1, dead_after: float = 0.5,
                 handover_grace: float = 0.05, start_hold: float | None = None,
                 patience: float = DEFAULT_PATIENCE) -> None:
        self.api_client = api_client
        self.node = node
        self.load_balancer_class = load_balancer_class
        self.handover_grace = handover_grace
        # Long enough to hear every live peer at least twice before we claim anything.
        self.start_hold = start_hold if start_hold is not None else max(dead_after * 1.5, 3 * heartbeat_interval)
        # How long a starting peer may hold back IPs it would own: its hold (its first heartbeat starts
        # it) and a few heartbeats. Bounded tightly, since it delays a crash failover happening meanwhile.
        self.start_courtesy = self.start_hold + 3 * heartbeat_interval
        self.stop_event = threading.Event()
        self.ready = False
        self._dirty = threading.Event()
        self._reannounce = threading.Event()
        self._threads: list[threading.Thread] = []

        self.services = Informer(api_client, "/api/v1/services", "services")
        self.slices = Informer(api_client, "/apis/discovery.k8s.io/v1/endpointslices", "endpointslices")
        self.nodes = Informer(api_client, "/api/v1/nodes", "nodes")
        self.pools = Informer(api_client, f"/apis/{names.API_VERSION}/{names.POOLS}", names.POOLS)
        self.ads = Informer(api_client, f"/apis/{names.API_VERSION}/{names.L2ADVERTISEMENTS}", names.L2ADVERTISEMENTS)
        # Our own record only, to write it again should it disappear.
        self.record = Informer(api_client, f"/apis/{names.API_VERSION}/{names.L2NODESTATUSES}", names.L2NODESTATUSES,
                               field_selector=f"metadata.name={node}")
        self.informers = [self.services, self.slices, self.nodes, self.pools, self.ads, self.record]
        for inf in self.informers:
            inf.add_handler(lambda _o: self.wake(), lambda _o, _n: self.wake(), lambda _o: self.wake())

        self.heartbeat = HeartbeatService(node, port=heartbeat_port, interval=heartbeat_interval,
                                          dead_after=dead_after, on_change=self._membership_changed)
        self.netlink = NetlinkAnnouncer()
        self.responders: dict[str, Responder] = {}
        self._identity: dict[str, tuple[int, str] | None] = {}  # ifname -> (index, MAC) a responder opened
        self.last_sync = 0.0
        self.recorder = EventRecorder(api_client, names.AGENT_NAME, host=node)
        self.records = RecordWriter(api_client, node, self._node_uid)
        self.claims: dict[str, Claim] = {}
        self.agreement = Agreement(node, patience)
        self._held: frozenset[str] = frozenset()  # IPs waiting for the peers' views (logged on change)
        self._problems: dict[str, str] = {}  # ip -> last problem reported (to report each once)
        self._conflict_logged: dict[str, float] = {}

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

    def _node_uid(self) -> str | None:
        obj = self.nodes.get(self.node)
        return obj["metadata"].get("uid") if obj else None

    # -- life cycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Announce until stop_event is set, then hand over and clean up."""
        removed = self.netlink.cleanup()
        if removed:
            log.info("removed %d leftover address(es) of a previous run: %s", len(removed), removed)
        self.heartbeat.start()
        for inf in self.informers:
            inf.start()
        self.records.start()
        while not self.stop_event.is_set() and not all(inf.has_synced() for inf in self.informers):
            self.stop_event.wait(0.05)
        # Peers learn we are starting (our not-ready heartbeats) and we hear them all before we claim.
        self.heartbeat.set_peers(_peer_addresses(self.nodes.objects(), self.node))
        self.stop_event.wait(self.start_hold)
        if not self.stop_event.is_set():
            self.ready = True
            self.last_sync = time.monotonic()
            self.heartbeat.set_ready(True)
            log.info("ready: announcing as %s", self.node)
        while not self.stop_event.is_set():
            self._dirty.wait(_RESYNC)
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
            time.sleep(self.handover_grace)
        for r in self.responders.values():
            r.close()
        self.responders.clear()
        self.netlink.cleanup()
        self.netlink.close()
        metrics.OWNERSHIP_CHANGES.labels("lost").inc(len(self.claims))
        self.claims.clear()
        self.records.set([])
        self.records.flush(2.0)
        self.records.stop()
        self.recorder.stop(2.0)
        self.heartbeat.stop()
        for inf in self.informers:
            inf.stop()

    def healthy(self) -> bool:
        """Heartbeats flow and, once ready, syncs keep succeeding (a stuck sync is a restart's job)."""
        if not self.heartbeat.alive():
            return False
        return not self.ready or time.monotonic() - self.last_sync < 30

    # -- the sync ---------------------------------------------------------------------------------

    def cluster(self) -> plan.Cluster:
        return plan.Cluster(self.services.objects(), self.slices.objects(), self.nodes.objects(), self.pools.objects(),
                            self.ads.objects())

    def live_nodes(self) -> frozenset[str]:
        own = {self.node} if self.ready else set()
        return self.heartbeat.eligible() | own

    def sync(self) -> None:
        cluster = self.cluster()
        self.heartbeat.set_peers(_peer_addresses(cluster.nodes, self.node))
        alive = self.heartbeat.peers_alive()
        metrics.PEERS.labels("alive").set(len(alive))
        metrics.PEERS.labels("ready").set(len(self.heartbeat.eligible()))
        if not self.ready:
            return
        live = self.live_nodes()
        decisions = plan.decide_announcements(cluster, live, self.load_balancer_class)
        view = digest(decisions)
        self.heartbeat.set_view(view)
        mine = {ip: d for ip, d in decisions.items() if d.announcement and d.announcement.node == self.node}
        self._wait_for_agreement(mine, view, owners(decisions), live)
        starting = self.heartbeat.starting(self.start_courtesy)
        if starting and mine.keys() - self.claims.keys():
            # An IP we do not hold yet waits for a starting peer that would own it (see starting()).
            later = plan.decide_announcements(cluster, live | starting, self.load_balancer_class)
            for ip in mine.keys() - self.claims.keys():
                a = later[ip].announcement
                if a is not None and a.node in starting:
                    del mine[ip]
        links = read_links()
        wanted: dict[str, tuple[plan.Decision, tuple[str, ...], str]] = {}
        for ip, d in mine.items():
            assert d.announcement is not None
            ifaces = interfaces.select_interfaces(ip, links, d.announcement.interfaces)
            if not ifaces:
                self._problem(d, interfaces.explain_no_interface(ip, links, d.announcement.interfaces))
                continue
            wanted[ip] = (d, ifaces, d.announcement.mode)
        for ip in self._problems.keys() - mine.keys():
            del self._problems[ip]  # not ours any more: report afresh if it comes back
        self._apply(wanted, {link.name: link for link in links})
        self.records.check(self.record.get(self.node), self.record.has_synced())
        self.last_sync = time.monotonic()

    def _wait_for_agreement(self, mine: dict[str, plan.Decision], view: str, decided: dict[str, str],
                            live: frozenset[str]) -> None:
        """Leave out of `mine` the IPs a live peer may still announce from a view unlike ours."""
        now = time.monotonic()
        was_impatient = self.agreement.impatient(now)
        self.agreement.observe(view, self.heartbeat.views(), decided, now)
        metrics.PEERS.labels("differing").set(len(self.agreement.differing))
        if self.agreement.impatient(now) and not was_impatient:
            log.warning("peers %s still decide differently after %.0f s: announcing without them",
                        ", ".join(sorted(self.agreement.differing)), self.agreement.patience)
        held = frozenset(self.agreement.held_back(mine.keys() - self.claims.keys(), live, now))
        if held and held != self._held:
            log.info("waiting for %s to see what this node sees before announcing %s",
                     ", ".join(sorted(self.agreement.differing)), ", ".join(sorted(held)))
        self._held = held
        for ip in held:
            del mine[ip]

    def _apply(self, wanted: dict[str, tuple[plan.Decision, tuple[str, ...], str]],
               links: dict[str, interfaces.Link]) -> None:
        answer: dict[str, set[str]] = {}
        announce_only: dict[str, set[str]] = {}
        kernel: dict[str, set[str]] = {}
        for ip, (_d, ifaces, mode) in wanted.items():
            for ifname in ifaces:
                if mode == "Netlink":
                    kernel.setdefault(ifname, set()).add(ip)
                    announce_only.setdefault(ifname, set()).add(ip)
                else:
                    answer.setdefault(ifname, set()).add(ip)
        failed: dict[str, str] = {}  # ip -> why it is not announced on some interface
        for f in self.netlink.set_ips(kernel):
            failed[f.ip] = f"{f.action} {f.ip} on {f.ifname} failed: {f.reason}"
        for ifname in sorted(set(self.responders) | set(answer) | set(announce_only)):
            ips, only = answer.get(ifname, set()), announce_only.get(ifname, set())
            # One interface's trouble must not stop the others (nor the record of what works).
            try:
                self._apply_interface(ifname, links.get(ifname), ips, only)
            except Exception as e:
                log.warning("cannot announce on %s: %s", ifname, e)
                for ip in ips | only:
                    failed[ip] = f"cannot announce on {ifname}: {e}"
        for ip, why in failed.items():
            if ip in wanted:
                self._problem(wanted.pop(ip)[0], why)
        if self._reannounce.is_set():
            self._reannounce.clear()
            for r in self.responders.values():
                r.announce()
        self._record_changes(wanted)

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
            responder = Responder(ifname, on_conflict=self._conflict)
            try:
                responder.start()
            except Exception:
                responder.close()
                raise
            self.responders[ifname] = responder
            self._identity[ifname] = identity
        responder.set_ips(ips, only)

    def _record_changes(self, wanted: dict[str, tuple[plan.Decision, tuple[str, ...], str]]) -> None:
        before = self.claims
        after: dict[str, Claim] = {}
        for ip, (d, ifaces, mode) in wanted.items():
            old = before.get(ip)
            if old is not None and old.interfaces == ifaces and old.mode == mode and old.decision == d:
                after[ip] = old
                continue
            after[ip] = Claim(d, ifaces, mode, old.since if old else timestamps.now())
            if old is None:
                metrics.OWNERSHIP_CHANGES.labels("gained").inc()
                self._problems.pop(ip, None)
                message = f"announcing {ip} from node {self.node} on {', '.join(ifaces)} ({mode})"
                log.info(message)
                for key in d.services:
                    self._event(key, "Normal", names.REASON_NODE_ASSIGNED, message)
        for ip in before.keys() - after.keys():
            metrics.OWNERSHIP_CHANGES.labels("lost").inc()
            log.info("stopped announcing %s", ip)
        self.claims = after
        for mode in ("Responder", "Netlink"):
            for family, version in (("ipv4", "."), ("ipv6", ":")):
                metrics.ANNOUNCED.labels(family, mode).set(
                    sum(1 for ip, c in after.items() if c.mode == mode and version in ip))
        if after != before:
            self.records.set([Record(ip, c.decision.services, c.decision.pool, c.interfaces, c.mode, c.since)
                              for ip, c in after.items()])

    def _problem(self, d: plan.Decision, message: str) -> None:
        if self._problems.get(d.ip) == message:
            return
        self._problems[d.ip] = message
        log.warning("cannot announce %s: %s", d.ip, message)
        for key in d.services:
            self._event(key, "Warning", names.REASON_NOT_ANNOUNCED, f"node {self.node}: {message}")

    def _event(self, key: str, type_: str, reason: str, message: str) -> None:
        svc = self.services.get(key)
        if svc is not None:
            self.recorder.event(svc, type_, reason, message)

    def _conflict(self, ip: str, mac: str) -> None:
        # Called from a responder thread; a flood of conflicting frames must not flood the log.
        now = time.monotonic()
        if now - self._conflict_logged.get(ip, -1e9) >= 10:
            self._conflict_logged[ip] = now
            log.warning("another host (%s) claims %s, which this node announces", mac, ip)


def _peer_addresses(nodes: list[dict], me: str) -> dict[str, str]:
    """Node name -> first InternalIP of every other Node: where its agent listens for heartbeats."""
    out = {}
    for n in nodes:
        if n["metadata"]["name"] == me:
            continue
        addrs = (n.get("status") or {}).get("addresses") or []
        internal = [a.get("address") for a in addrs if a.get("type") == "InternalIP" and a.get("address")]
        if internal:
            out[n["metadata"]["name"]] = internal[0]
    return out
