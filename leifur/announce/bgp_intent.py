"""What one node wants its routing daemon to do in BGP mode, and what the daemon reports back.

The BGP plan (pure, shared with leifurctl) produces a `NodeIntent` for each node; the agent
renders it into the daemon's configuration and reads `SessionState`s back for the node's record.
Times are in the units the API uses (seconds for BGP timers, milliseconds for BFD).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BFD:
    """A BFDProfile, as a session uses it."""

    name: str
    receive_interval_ms: int = 300
    transmit_interval_ms: int = 300
    detect_multiplier: int = 3
    echo_mode: bool = False
    echo_interval_ms: int = 50
    passive_mode: bool = False
    minimum_ttl: int = 254


@dataclass(frozen=True)
class SecretRef:
    """Where a session's password lives: key `password` of a Secret of type kubernetes.io/basic-auth."""

    namespace: str  # "": the agent's own namespace
    name: str


@dataclass(frozen=True)
class Session:
    """One BGP neighbour this node opens, from one BGPPeer."""

    peer: str  # the BGPPeer's name
    address: str
    peer_asn: int
    my_asn: int
    port: int = 179
    hold_time_s: int = 90
    keepalive_time_s: int = 30
    ebgp_multihop: bool = False
    source_address: str | None = None
    password_secret: SecretRef | None = None
    bfd: BFD | None = None


@dataclass(frozen=True)
class Route:
    """One prefix advertised to one peer, with the attributes the BGPAdvertisements give it."""

    prefix: str  # "192.0.2.10/32", "2001:db8::10/128", or an aggregate
    communities: tuple[str, ...] = ()  # "65000:100", sorted, no duplicates
    large_communities: tuple[str, ...] = ()  # "65000:1:2", sorted, no duplicates
    local_preference: int | None = None


@dataclass(frozen=True)
class NodeIntent:
    """Every session one node opens and every route it advertises, by BGPPeer name."""

    router_id: str
    sessions: tuple[Session, ...] = ()
    routes: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionState:
    """One session as the daemon reports it (for the node's record, status and metrics)."""

    peer: str  # the BGPPeer's name
    address: str
    state: str  # BGP FSM state as the daemon names it: "Established", "Active", "Connect", "Idle", ...
    since_s: float | None = None  # seconds in this state, when the daemon says
    prefixes_advertised: int = 0
    bfd: str | None = None  # "up", "down", ... or None without BFD
