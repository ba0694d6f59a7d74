"""Signing and checking heartbeat datagrams: what a stranger without the key can and cannot do."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest

from leifur.agent import heartbeat_wire as wire
from leifur.agent.heartbeat_wire import Heartbeat, Keyring, key_id, open_datagram
from leifur.announce.interfaces import Lost

K1, K2, K3 = b"1" * 32, b"2" * 32, b"3" * 32
NOW = 1_800_000_000_000
HB = Heartbeat("node-1", inc=7, seq=3, ready=True, leaving=False, view="abc", ts=NOW)


LOST = Lost((ipaddress.ip_network("192.0.2.0/26"),), (("eth0",),))


def forged_with(key: bytes, **body_changes: object) -> bytes:
    """A datagram as someone holding `key` would write it."""
    return Heartbeat(**{**HB.__dict__, **body_changes}).seal(key)


def tampered(data: bytes) -> bytes:
    """The signed datagram with `"leaving":false` turned to true, signature unchanged."""
    return data.replace(b'"leaving":false', b'"leaving":true ')


CASES = {
    # name: (datagram, keyring, accept_unsigned, expected: Heartbeat or reason)
    "signed-with-current": (HB.seal(K1), Keyring(K1, (K1,)), False, HB),
    "signed-with-next-during-rotation": (HB.seal(K2), Keyring(K1, (K1, K2)), False, HB),
    "signed-with-a-key-we-do-not-hold": (HB.seal(K3), Keyring(K1, (K1, K2)), False, wire.UNKNOWN_KEY),
    "forged-leaving-without-the-key": (tampered(HB.seal(K1)), Keyring(K1, (K1,)), False, wire.BAD_SIGNATURE),
    "key-id-copied-tag-forged": (HB.seal(K3)[:5] + HB.seal(K1)[5:9] + HB.seal(K3)[9:], Keyring(K1, (K1,)), False,
                                 wire.BAD_SIGNATURE),
    "truncated-tag": (HB.seal(K1)[:-1], Keyring(K1, (K1,)), False, wire.BAD_SIGNATURE),
    "too-short-to-hold-a-tag": (wire.MAGIC2 + b"1234", Keyring(K1, (K1,)), False, wire.MALFORMED),
    "recorded-11-s-ago": (forged_with(K1, ts=NOW - 11_000), Keyring(K1, (K1,)), False, wire.STALE),
    "from-11-s-in-the-future": (forged_with(K1, ts=NOW + 11_000), Keyring(K1, (K1,)), False, wire.STALE),
    "9-s-clock-skew-is-tolerated": (forged_with(K1, ts=NOW - 9_000), Keyring(K1, (K1,)), False,
                                    Heartbeat(**{**HB.__dict__, "ts": NOW - 9_000})),
    "unsigned-where-signatures-are-required": (HB.encode(), Keyring(K1, (K1,)), False, wire.UNAUTHENTICATED),
    "unsigned-during-a-rollout": (HB.encode(), Keyring(K1, (K1,)), True, Heartbeat(**{**HB.__dict__, "ts": 0})),
    "unsigned-with-authentication-off": (HB.encode(), None, False, Heartbeat(**{**HB.__dict__, "ts": 0})),
    "signed-with-authentication-off": (HB.seal(K1), None, False, wire.UNKNOWN_KEY),
    "oversized": (HB.seal(K1) + b" " * 600, Keyring(K1, (K1,)), False, wire.MALFORMED),
    "another-protocol": (b"GET / HTTP/1.1\r\n", Keyring(K1, (K1,)), False, wire.MALFORMED),
    "with-what-its-down-links-lost": (forged_with(K1, lost=LOST), Keyring(K1, (K1,)), False,
                                      Heartbeat(**{**HB.__dict__, "lost": LOST})),
    "with-a-malformed-lost": (HB.encode().replace(b'"view"', b'"lost":{"subnets":["x"]},"view"'), None, False,
                              wire.MALFORMED),
}


@pytest.mark.parametrize("name", list(CASES))
def test_open_datagram(name: str) -> None:
    data, keys, accept_unsigned, expected = CASES[name]
    assert open_datagram(data, keys, accept_unsigned=accept_unsigned, now_ms=NOW, max_age_ms=10_000) == expected


def test_a_signed_body_that_is_not_a_heartbeat_is_malformed() -> None:
    head = wire.MAGIC2 + key_id(K1) + b'{"node":"a"}'
    data = head + hmac.new(K1, head, hashlib.sha256).digest()
    assert open_datagram(data, Keyring(K1, (K1,)), accept_unsigned=False, now_ms=NOW, max_age_ms=1) == wire.MALFORMED


def test_the_unsigned_format_is_what_agents_before_authentication_send() -> None:
    # Byte for byte the LFHB1 of 0.1: a rollout depends on old agents reading it.
    assert Heartbeat("n", 1, 2, True, False, "v", ts=5).encode() == \
        b'LFHB1{"node":"n","inc":1,"seq":2,"ready":true,"leaving":false,"view":"v"}'


def test_the_signing_key_must_be_accepted() -> None:
    with pytest.raises(ValueError):
        Keyring(K1, (K2,))


def test_what_does_not_fit_of_lost_is_left_out() -> None:
    # A long node name and 40 lost subnets: more than a datagram holds.
    many = Lost(tuple(ipaddress.ip_network(f"2001:db8:{i:x}::/64") for i in range(40)), (("eth0", "eth1"),))
    fitting = wire.fit("n" * 63, many)
    # The lists, shortened from their ends: named ones go first, as the rarer loss.
    assert fitting.named == () and 0 < len(fitting.subnets) < 40
    assert fitting.subnets == many.subnets[:len(fitting.subnets)]
    assert wire.fit("n" * 63, fitting) == fitting and wire.fit("short", LOST) == LOST
    assert wire.fit("n" * 253, many) == Lost()  # a name at its longest leaves no room
    hb = Heartbeat("n" * 63, 7, 3, view="v" * 64, ts=NOW, lost=many)
    for data, keys in ((hb.seal(K1), Keyring(K1, (K1,))), (hb.encode(), None)):
        assert len(data) <= wire.MAX_DATAGRAM
        got = open_datagram(data, keys, accept_unsigned=False, now_ms=NOW, max_age_ms=10_000)
        # Exactly what the sender elects with (fit): it decides about itself as its peers do.
        assert isinstance(got, Heartbeat) and got.node == hb.node and got.lost == fitting
