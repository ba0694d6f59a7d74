"""The defaults an operator can change (the programs' flags) and those several modules share, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from . import names


@dataclass(frozen=True)
class LeaderSettings:
    """The controller's leader Lease (client-go's defaults)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        # renew_deadline < lease_duration is what keeps two leaders from writing at once.
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")


@dataclass(frozen=True)
class MetricsAuthSettings:
    """Who may read the metrics port: each caller's token checked by the API server, the answer reused."""

    # A decision (TokenReview, then SubjectAccessReview) is reused for the same token and path this
    # long: a scrape every 30 s costs the API server two requests a minute, and a revoked token or
    # role stops working within this time while the API server can be reached.
    cache_seconds: float = 60.0
    # After a review failed (API server unreachable), the last decision for that token is used
    # without asking again for this long, so that scrapes during an outage are not each held up
    # by a request that will time out.
    retry_after_failure: float = 5.0
    # Seconds for each review request (connect, then read): a scrape waits at most about twice this.
    review_timeout: float = 3.0
    # Distinct tokens and paths remembered; beyond it, refusals are forgotten first, then the oldest.
    max_entries: int = 1024

    def __post_init__(self) -> None:
        if not (self.cache_seconds > 0 and self.retry_after_failure >= 0 and self.review_timeout > 0
                and self.max_entries > 0):
            raise ValueError("cache_seconds, review_timeout and max_entries must be positive")


@dataclass(frozen=True)
class ControllerSettings:
    metrics_port: int = 7472
    # Plain HTTP, /healthz and /readyz only, for the kubelet's probes: on the Pod's network, where
    # the kubelet reaches it at the Pod's IP.
    health_address: str = ":7475"
    # A sync waits on its API write most of its time: on a backlog of 5,000, 2/4/8/16 workers gave
    # 323/454/530-551/569 Services/s (docs/benchmarks.md, section 5).
    workers: int = 8
    # A pool's status (addresses in use) follows the Services' allocations this many seconds late
    # at most: one pool sync and one status write per interval, not one per Service allocated.
    pool_status_delay: float = 1.0
    lease_namespace: str = "leifur-system"
    lease_name: str = "leifur-controller"
    leader: LeaderSettings = LeaderSettings()
    # The Secret with the agents' heartbeat key, in lease_namespace (the controller's namespace);
    # created with a random key at start-up if it is missing, and never changed.
    heartbeat_secret: str = names.HEARTBEAT_SECRET
    create_heartbeat_secret: bool = True


@dataclass(frozen=True)
class HeartbeatSettings:
    """Liveness between agents: how often they speak and when silence means death."""

    port: int = 7474
    interval: float = 0.1
    dead_after: float = 0.5
    # A signed heartbeat whose timestamp is further than this from the receiver's clock is refused
    # (a replay). Nodes' clocks must agree within it; NTP keeps them within milliseconds.
    max_age: float = 10.0
    # Where the Secret with the keys is mounted; None: authentication off (--insecure-heartbeats).
    key_dir: str | None = names.HEARTBEAT_KEY_DIR
    # During a rollout from agents that do not sign: send unsigned copies too, and accept them.
    accept_unsigned: bool = False

    def __post_init__(self) -> None:
        if self.dead_after <= 2 * self.interval:
            raise ValueError("dead_after must exceed two heartbeat intervals")
        if self.max_age <= self.dead_after:
            raise ValueError("max_age must exceed dead_after")

    @property
    def start_hold(self) -> float:
        """How long a starting agent listens before it claims: long enough to hear every live peer twice."""
        return max(self.dead_after * 1.5, 3 * self.interval)


@dataclass(frozen=True)
class ConflictSettings:
    """Address conflicts (RFC 5227's rules, adapted; see docs/agent.md#address-conflicts).

    A new IP (never announced by any of our nodes) is probed before its first announcement:
    `probe_count` probes `probe_interval` apart, then `probe_wait` more (0.3 s in all by default:
    a LAN answers in milliseconds, and RFC 5227's 1-2 s are for hosts configuring themselves).
    A foreign claim of an IP we announce is defended once; another within `defend_interval`
    (RFC 5227's DEFEND_INTERVAL) is a persistent conflict, handled by `policy`. A conflict, and a
    probe's finding, is forgotten after `clear_after` seconds without a sign of it (then probed,
    or announced, again)."""

    probe_count: int = 3
    probe_interval: float = 0.1
    probe_wait: float = 0.1
    defend_interval: float = 10.0
    clear_after: float = 30.0
    policy: str = "defend"  # or "yield"

    def __post_init__(self) -> None:
        if not 0 <= self.probe_count <= 10:
            raise ValueError("probe_count must be 0..10 (0: no probing)")
        if self.probe_interval < 0 or self.probe_wait < 0:
            raise ValueError("probe_interval and probe_wait must not be negative")
        if not 0 < self.defend_interval <= self.clear_after:
            raise ValueError("need 0 < defend_interval <= clear_after")
        if self.policy not in ("defend", "yield"):
            raise ValueError("policy must be defend or yield")


@dataclass(frozen=True)
class AgentSettings:
    # Not 7472, 7473 or 7946: MetalLB's speaker opens those on the node's network, and a cutover
    # runs both on the same nodes (tests/integration/test_deploy_beside_metallb.py).
    metrics_port: int = 7476
    # Plain HTTP, /healthz and /readyz only, for the kubelet's probes. The agent shares the node's
    # network, and so does the kubelet: loopback keeps the unauthenticated port off the LAN.
    health_address: str = "127.0.0.1:7475"
    heartbeat: HeartbeatSettings = HeartbeatSettings()
    # On SIGTERM, keep answering this long after telling peers we leave.
    handover_grace: float = 0.05
    # How long IPs wait for peers whose view of the cluster differs from ours. Longer than an
    # informer's relist after an outage (backoff capped at 5 s, plus jitter and the LIST).
    agreement_patience: float = 10.0
    # Re-check links and decisions at least this often even without events (an interface came up).
    resync: float = 1.0
    # How long a starting peer (alive, not ready) keeps the IPs it will own reserved, from when we
    # first hear it: its caches' sync, which takes seconds on a loaded node, then its start-up hold.
    # Bounded, so that an agent that never gets ready (no API server) does not keep new IPs dark.
    # A failover is never reserved: see agent/step.py.
    start_reserve: float = 10.0
    conflicts: ConflictSettings = ConflictSettings()
    # On SIGTERM in BGP mode, how long to wait for the withdrawals of the node's routes to be sent
    # to every established peer before going on (well within a pod's 30 s grace period).
    bgp_withdraw_timeout: float = 10.0

    @property
    def start_reserve_for_peers(self) -> float:
        """The reserve, never shorter than twice a peer's start-up hold (a large --dead-after)."""
        return max(self.start_reserve, 2 * self.heartbeat.start_hold)
