"""The agent's Prometheus metrics (names start with leifur_agent_).

The packet path increments counters through children bound once per interface
(`for_interface`), so a reply costs one lock, not a label lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from leifur.announce.bgp_intent import SessionState
from leifur.kube.metrics import _metric

from .frr import ESTABLISHED

REQUESTS = _metric(Counter, "leifur_agent_requests_total",
                   "ARP requests and Neighbor Solicitations received for IPs this node owns.", ("family", "interface"))
REPLIES = _metric(Counter, "leifur_agent_replies_total", "ARP replies and Neighbor Advertisements sent in answer.",
                  ("family", "interface"))
GRATUITOUS = _metric(Counter, "leifur_agent_gratuitous_total",
                     "Gratuitous ARP and unsolicited Neighbor Advertisements sent.", ("family", "interface"))
MALFORMED = _metric(Counter, "leifur_agent_malformed_frames_total",
                    "Frames that passed the kernel filter but were dropped as malformed.", ("family", "interface"))
CONFLICTS = _metric(Counter, "leifur_agent_conflicts_total",
                    "Frames in which another MAC claimed an IP this node announces.", ("family", "interface"))
ADDRESS_CONFLICTS = _metric(Gauge, "leifur_agent_address_conflicts",
                            "IPs this node owns that a host outside the cluster uses: InUse (found by the probe "
                            "before the first announcement, not announced) or Claimed (claimed persistently while "
                            "announced).", ("kind",))
PROBES = _metric(Counter, "leifur_agent_address_probes_total",
                 "Probes of new IPs before their first announcement, by result (Clear, InUse, Failed).", ("result",))
ANNOUNCED = _metric(Gauge, "leifur_agent_announced_ips", "IPs this node announces now.", ("family", "mode"))
OWNERSHIP_CHANGES = _metric(Counter, "leifur_agent_ownership_changes_total",
                            "IPs this node started (gained) or stopped (lost) announcing.", ("direction",))
PEERS = _metric(Gauge, "leifur_agent_peers", "Peer agents by state as this node sees them.", ("state",))
HEARTBEATS = _metric(Counter, "leifur_agent_heartbeats_total", "Liveness datagrams sent and accepted.",
                     ("direction",))
HEARTBEATS_REJECTED = _metric(Counter, "leifur_agent_heartbeats_rejected_total",
                              "Datagrams on the heartbeat port refused, by reason (see docs/security.md).", ("reason",))
DECISIONS = _metric(Counter, "leifur_agent_decisions_total",
                    "Syncs by whether they decided who announces what anew (made: the cluster, the live "
                    "nodes or the links changed) or reused the last decisions (reused).", ("result",))
PACKET_ERRORS = _metric(Counter, "leifur_agent_packet_errors_total",
                        "Exceptions while handling a frame or sending one (the responder drops it and goes on).",
                        ("family", "interface"))


@dataclass(frozen=True)
class InterfaceCounters:
    """Counter children of one (family, interface), bound once for the packet path."""

    requests: Counter
    replies: Counter
    gratuitous: Counter
    malformed: Counter
    conflicts: Counter


def for_interface(family: str, interface: str) -> InterfaceCounters:
    """`family` is leifur.kube.metrics.family(4) or family(6)."""
    return InterfaceCounters(*(m.labels(family, interface) for m in (REQUESTS, REPLIES, GRATUITOUS, MALFORMED,
                                                                      CONFLICTS)))

BGP_SESSION_UP = _metric(Gauge, "leifur_agent_bgp_session_up",
                         "1 while this node's BGP session to the peer is Established, else 0.", ("peer",))
BGP_PREFIXES = _metric(Gauge, "leifur_agent_bgp_prefixes_advertised",
                       "Prefixes this node advertises to the peer now.", ("peer",))
BFD_SESSION_UP = _metric(Gauge, "leifur_agent_bfd_session_up",
                         "1 while the BFD session beside this node's BGP session to the peer is up, else 0 "
                         "(absent for a peer without a BFDProfile).", ("peer",))
BGP_APPLIES = _metric(Counter, "leifur_agent_bgp_config_applies_total",
                      "Changes of the routing daemon's configuration (a changed BGP intent applied).", ())
_bgp_peers: set[str] = set()
_bfd_peers: set[str] = set()


def set_bgp_sessions(states: Iterable[SessionState]) -> None:
    """The BGP gauges for exactly these sessions (a peer gone loses its series)."""
    global _bgp_peers, _bfd_peers
    peers, bfd = set(), set()
    for s in states:
        peers.add(s.peer)
        BGP_SESSION_UP.labels(s.peer).set(1 if s.state == ESTABLISHED else 0)
        BGP_PREFIXES.labels(s.peer).set(s.prefixes_advertised)
        if s.bfd is not None:
            bfd.add(s.peer)
            BFD_SESSION_UP.labels(s.peer).set(1 if s.bfd == "up" else 0)
    for gauge, before, now in ((BGP_SESSION_UP, _bgp_peers, peers), (BGP_PREFIXES, _bgp_peers, peers),
                               (BFD_SESSION_UP, _bfd_peers, bfd)):
        for peer in before - now:
            gauge.remove(peer)
    _bgp_peers, _bfd_peers = peers, bfd
