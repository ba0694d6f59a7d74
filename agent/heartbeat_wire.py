"""The heartbeat datagram: its fields, and how it is signed and checked. Pure: keys and clocks are passed in.

Two formats travel on the port:
- `LFHB2` (signed): MAGIC2, the 4-byte id of the key that signed it, the JSON body, then an
  HMAC-SHA256 over everything before it. The body carries `ts`, the sender's wall clock in
  milliseconds, so a datagram recorded and replayed later is refused as stale.
- `LFHB1` (unsigned): MAGIC1 and the same JSON body without `ts`, byte for byte what agents
  before authentication send. Sent and accepted only during a rollout from such agents
  (`--heartbeat-accept-unauthenticated`) or when authentication is off (`--insecure-heartbeats`).

Anyone on the LAN can send to the port. Without the key a stranger can neither make up a
heartbeat nor change one (the HMAC covers the whole datagram); replaying a recorded one is
refused here when it is older than `max_age`, and by Membership when its incarnation and
sequence do not move forward.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from dataclasses import dataclass, field

from leifur.announce.interfaces import Lost

MAGIC1 = b"LFHB1"
MAGIC2 = b"LFHB2"
MAX_DATAGRAM = 512
KEY_ID_BYTES = 4
TAG_BYTES = 32

# Why a datagram was refused: the `reason` label of leifur_agent_heartbeats_rejected_total.
MALFORMED = "malformed"
UNAUTHENTICATED = "unauthenticated"  # unsigned, where a signature is required
UNKNOWN_KEY = "unknown-key"  # signed with a key we do not hold (a rotation not propagated yet?)
BAD_SIGNATURE = "bad-signature"
STALE = "stale"  # its timestamp is further than max_age from our clock
REPLAYED = "replayed"  # its incarnation and sequence do not move forward
UNKNOWN_NODE = "unknown-node"
WRONG_ADDRESS = "wrong-address"  # not from the named node's address
REASONS = (MALFORMED, UNAUTHENTICATED, UNKNOWN_KEY, BAD_SIGNATURE, STALE, REPLAYED, UNKNOWN_NODE, WRONG_ADDRESS)


@dataclass(frozen=True)
class Heartbeat:
    node: str
    inc: int
    seq: int
    ready: bool = True
    leaving: bool = False
    view: str = ""
    ts: int = 0  # the sender's wall clock in ms; 0 in unsigned datagrams
    # What the sender's down links keep it from announcing; absent from the datagram when nothing
    # is, so that it reads the same to agents that predate it.
    lost: Lost = field(default_factory=Lost)

    def _body(self) -> dict[str, object]:
        body: dict[str, object] = {"node": self.node, "inc": self.inc, "seq": self.seq, "ready": self.ready,
                                   "leaving": self.leaving, "view": self.view}
        if self.lost:
            body["lost"] = self.lost.as_dict()
        return body

    def encode(self) -> bytes:
        """The unsigned form (LFHB1)."""
        return MAGIC1 + _json(self._fitting()._body())

    def seal(self, key: bytes) -> bytes:
        """The signed form (LFHB2), signed with `key`."""
        head = MAGIC2 + key_id(key) + _json({**self._fitting()._body(), "ts": self.ts})
        return head + hmac.new(key, head, hashlib.sha256).digest()

    def _fitting(self) -> Heartbeat:
        return dataclasses.replace(self, lost=fit(self.node, self.lost))


@dataclass(frozen=True)
class Keyring:
    """The key we sign with and every key we accept (the signing one included)."""

    signing: bytes
    accepted: tuple[bytes, ...]
    _by_id: dict[bytes, tuple[bytes, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.signing not in self.accepted:
            raise ValueError("the signing key must be accepted")
        by_id: dict[bytes, tuple[bytes, ...]] = {}
        for k in self.accepted:  # ids are hashes: computed once, not per datagram
            by_id[key_id(k)] = (*by_id.get(key_id(k), ()), k)
        object.__setattr__(self, "_by_id", by_id)

    def by_id(self, kid: bytes) -> tuple[bytes, ...]:
        return self._by_id.get(kid, ())


def fit(node: str, lost: Lost) -> Lost:
    """As much of `lost` as every heartbeat of `node` holds within MAX_DATAGRAM (agents refuse
    longer ones), whatever its other fields: the agent elects with this, so that it decides about
    itself as its peers do. What is left out is elected as if still usable: the node elected then
    reports that it cannot announce the IP, as when nothing is said."""
    def size(candidate: Lost) -> int:
        longest = {"node": node, "inc": 2**63, "seq": 2**63, "ready": False, "leaving": False, "view": "v" * 64,
                   "lost": candidate.as_dict(), "ts": 2**63}
        return len(MAGIC2) + KEY_ID_BYTES + len(_json(longest)) + TAG_BYTES

    while lost and size(lost) > MAX_DATAGRAM:
        lost = Lost(lost.subnets, lost.named[:-1]) if lost.named else Lost(lost.subnets[:-1])
    return lost


def key_id(key: bytes) -> bytes:
    """A short public name for a key, so that a receiver tells "not our key" from "forged"."""
    return hashlib.sha256(b"leifur heartbeat key id\0" + key).digest()[:KEY_ID_BYTES]


def open_datagram(data: bytes, keys: Keyring | None, *, accept_unsigned: bool, now_ms: int,
                  max_age_ms: int) -> Heartbeat | str:
    """The heartbeat in `data`, or the reason it is refused (one of REASONS). Never raises.

    `keys` None means authentication is off: only unsigned datagrams are understood.
    """
    if len(data) > MAX_DATAGRAM:
        return MALFORMED
    if data.startswith(MAGIC1):
        if keys is not None and not accept_unsigned:
            return UNAUTHENTICATED
        return _parse(data[len(MAGIC1):], signed=False) or MALFORMED
    if not data.startswith(MAGIC2) or len(data) < len(MAGIC2) + KEY_ID_BYTES + TAG_BYTES:
        return MALFORMED
    if keys is None:
        return UNKNOWN_KEY
    head, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
    candidates = keys.by_id(head[len(MAGIC2):len(MAGIC2) + KEY_ID_BYTES])
    if not candidates:
        return UNKNOWN_KEY
    if not any(hmac.compare_digest(hmac.new(k, head, hashlib.sha256).digest(), tag) for k in candidates):
        return BAD_SIGNATURE
    hb = _parse(head[len(MAGIC2) + KEY_ID_BYTES:], signed=True)
    if hb is None:
        return MALFORMED
    if abs(now_ms - hb.ts) > max_age_ms:
        return STALE
    return hb


def _json(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _parse(raw: bytes, *, signed: bool) -> Heartbeat | None:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    node, inc, seq = body.get("node"), body.get("inc"), body.get("seq")
    ready, leaving, view = body.get("ready"), body.get("leaving"), body.get("view", "")
    ts = body.get("ts") if signed else 0
    lost = Lost.from_dict(body["lost"]) if "lost" in body else Lost()
    if not (isinstance(node, str) and 0 < len(node) <= 253 and type(inc) is int and type(seq) is int
            and type(ready) is bool and type(leaving) is bool and isinstance(view, str) and len(view) <= 64
            and type(ts) is int and lost is not None):
        return None
    return Heartbeat(node, inc, seq, ready, leaving, view, ts, lost)
