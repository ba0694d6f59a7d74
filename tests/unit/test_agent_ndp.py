"""Neighbor Discovery frames: parsed and built by agent.ndp, checked against scapy as an oracle."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrHopByHop,
    in6_getnsma,
    in6_getnsmac,
)
from scapy.layers.l2 import Ether
from scapy.packet import Padding, Raw

from leifur.agent import ndp
from leifur.agent.arp import MalformedFrame

MAC = bytes.fromhex("020000000001")
CLIENT_MAC = "02:00:00:00:01:00"
TARGET = "2001:db8::40"
CLIENT = "2001:db8::100"
GROUP = "ff02::1:ff00:40"


def ns(target=TARGET, src=CLIENT, dst=GROUP, hlim=255, eth_src=CLIENT_MAC, lladdr: str | None = CLIENT_MAC,
       options: bytes = b"", **icmp) -> bytes:
    pkt = Ether(src=eth_src, dst="33:33:ff:00:00:40") / IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(
        tgt=target, **icmp)
    if options:
        pkt = pkt / Raw(options)
    if lladdr is not None:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=lladdr)
    return bytes(pkt)


def na(target=TARGET, src="2001:db8::99", dst="ff02::1", solicited=0, override=1,
       lladdr="02:00:00:00:00:99") -> bytes:
    return bytes(Ether(src="02:00:00:00:00:99", dst="33:33:00:00:00:01") / IPv6(src=src, dst=dst, hlim=255)
                 / ICMPv6ND_NA(tgt=target, S=solicited, O=override, R=0) / ICMPv6NDOptDstLLAddr(lladdr=lladdr))


def checksum_ok(frame: bytes) -> bool:
    """scapy recomputes the ICMPv6 checksum; it must equal the one in the frame."""
    pkt = Ether(frame)
    layer = pkt[IPv6].payload
    sent = layer.cksum
    del layer.cksum
    return Ether(bytes(pkt))[IPv6].payload.cksum == sent


def ip6(b: bytes) -> str:
    return str(ipaddress.IPv6Address(b))


@given(st.ip_addresses(v=6))
def test_solicited_node_group_and_mac_match_scapy(ip):
    assert ip6(ndp.solicited_node(str(ip))) == ipaddress.IPv6Address(in6_getnsma(ip.packed)).compressed
    assert ndp.multicast_mac(ndp.solicited_node(ip.packed)).hex(":") == in6_getnsmac(in6_getnsma(ip.packed))


def test_parses_a_solicitation_as_scapy_built_it():
    pkt = ndp.parse(ns())
    assert pkt.is_solicit and not pkt.is_dad
    assert ip6(pkt.target) == TARGET and ip6(pkt.src) == CLIENT and ip6(pkt.dst) == GROUP
    assert pkt.lladdr.hex(":") == CLIENT_MAC and pkt.eth_src.hex(":") == CLIENT_MAC


def test_checksum_matches_scapy_on_built_frames():
    frames = [ndp.build_solicited_na(ndp.parse(ns()), MAC), ndp.build_unsolicited_na(TARGET, MAC),
              ndp.build_solicit(MAC, CLIENT, TARGET), ndp.build_solicit(MAC, "::", TARGET)]
    for f in frames:
        assert checksum_ok(f)
        ndp.parse(f)  # and our own parser verifies it too


def test_solicited_advertisement_answers_the_solicitor():
    reply = Ether(ndp.build_solicited_na(ndp.parse(ns()), MAC))
    assert reply.dst == CLIENT_MAC and reply.src == "02:00:00:00:00:01"
    assert reply[IPv6].src == TARGET and reply[IPv6].dst == CLIENT and reply[IPv6].hlim == 255
    assert reply[IPv6].plen == 32 and reply[IPv6].nh == 58
    a = reply[ICMPv6ND_NA]
    assert (a.code, a.R, a.S, a.O, a.tgt) == (0, 0, 1, 1, TARGET)
    assert reply[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:00:01"


def test_without_a_source_lladdr_option_the_reply_goes_to_the_frame_source():
    pkt = ndp.parse(ns(dst=TARGET, lladdr=None))  # a unicast reachability probe
    assert pkt.lladdr is None
    assert Ether(ndp.build_solicited_na(pkt, MAC)).dst == CLIENT_MAC


def test_a_dad_probe_is_answered_to_all_nodes_without_the_solicited_flag():
    pkt = ndp.parse(ns(src="::", lladdr=None))
    assert pkt.is_dad
    reply = Ether(ndp.build_solicited_na(pkt, MAC))
    assert reply.dst == "33:33:00:00:00:01" and reply[IPv6].dst == "ff02::1" and reply[IPv6].src == TARGET
    assert (reply[ICMPv6ND_NA].S, reply[ICMPv6ND_NA].O) == (0, 1)


def test_unsolicited_advertisement_overrides_to_all_nodes():
    f = Ether(ndp.build_unsolicited_na(TARGET, MAC))
    assert f.dst == "33:33:00:00:00:01" and f[IPv6].dst == "ff02::1" and f[IPv6].src == TARGET
    assert f[IPv6].hlim == 255
    a = f[ICMPv6ND_NA]
    assert (a.R, a.S, a.O, a.tgt) == (0, 0, 1, TARGET)
    assert f[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:00:01"


def test_parses_advertisements_with_their_flags():
    pkt = ndp.parse(na())
    assert not pkt.is_solicit and pkt.flags == ndp.FLAG_OVERRIDE
    assert pkt.lladdr.hex(":") == "02:00:00:00:00:99" and ip6(pkt.target) == TARGET
    assert ndp.parse(na(dst=CLIENT, solicited=1)).flags == ndp.FLAG_OVERRIDE | ndp.FLAG_SOLICITED


def test_ethernet_padding_after_the_payload_is_ignored():
    frame = bytes(Ether(ns(lladdr=None)) / Padding(b"\x00" * 8))
    assert ndp.parse(frame).target == ndp.packed_ipv6(TARGET)


def test_unknown_options_are_skipped():
    frame = ns(options=b"\x0e\x01" + b"\x00" * 6)  # a nonce option before the source lladdr
    assert Ether(frame)[IPv6].plen == 40
    assert ndp.parse(frame).lladdr.hex(":") == CLIENT_MAC


def _with_options(raw: bytes) -> bytes:
    frame = ns(lladdr=None, options=raw)
    assert Ether(frame)[IPv6].plen == 24 + len(raw) and checksum_ok(frame)
    return frame


def _bad_checksum() -> bytes:
    f = bytearray(ns())
    f[56] ^= 0xFF
    return bytes(f)


def _payload_len(n: int) -> bytes:
    f = bytearray(ns())
    f[18:20] = n.to_bytes(2, "big")
    return bytes(f)


@pytest.mark.parametrize("frame, why", [
    (b"", "empty"),
    (ns()[:77], "truncated below the minimum"),
    (ns()[:-1], "payload length beyond the frame"),
    (_payload_len(16), "ICMPv6 shorter than an NS"),
    (_bad_checksum(), "checksum"),
    (ns(hlim=64), "hop limit"),
    (ns(code=1), "code"),
    (ns(target="ff02::1"), "multicast target"),
    (ns(src="ff02::2"), "multicast source"),
    (ns(eth_src="01:00:5e:00:00:01"), "multicast Ethernet source"),
    (ns(lladdr="ff:ff:ff:ff:ff:ff"), "broadcast lladdr option"),
    (ns(src="::"), "DAD with a source lladdr option"),
    (ns(src="::", dst=TARGET, lladdr=None), "DAD not to a solicited-node group"),
    (_with_options(b"\x01\x00" + b"\x00" * 6), "option of length 0"),
    (_with_options(b"\x01\x02" + b"\x00" * 6), "option past the end"),
    (_with_options(b"\x01"), "one byte of option"),
    (bytes(Ether(src=CLIENT_MAC, dst="33:33:ff:00:00:40") / IPv6(src=CLIENT, dst=GROUP, hlim=255)
           / IPv6ExtHdrHopByHop() / ICMPv6ND_NS(tgt=TARGET)), "extension header"),
    (bytes(Ether(src=CLIENT_MAC, dst="02:00:00:00:00:01") / IPv6(src=CLIENT, dst=TARGET, hlim=255)
           / ICMPv6EchoRequest(data=b"x" * 20)), "echo request"),
    (ns()[:14] + b"\x45" + ns()[15:], "IP version 4 in an IPv6 frame"),
    (ns()[:12] + b"\x08\x00" + ns()[14:], "ethertype"),
    (na(dst="ff02::1", solicited=1), "solicited NA to multicast"),
    (na(src="::"), "NA from ::"),
])
def test_malformed_frames_are_rejected(frame, why):
    with pytest.raises(MalformedFrame):
        ndp.parse(frame)


def test_every_truncation_of_a_solicitation_is_rejected():
    frame = ns()
    for n in range(len(frame)):
        with pytest.raises(MalformedFrame):
            ndp.parse(frame[:n])


@given(st.binary(max_size=160))
@settings(max_examples=2000)
def test_random_bytes_parse_or_raise_malformed(data):
    try:
        pkt = ndp.parse(data)
    except MalformedFrame:
        return
    assert isinstance(pkt, ndp.NdPacket)


@given(st.binary(min_size=1, max_size=64))
@settings(max_examples=1000)
def test_random_options_with_a_valid_checksum_parse_or_raise(options):
    frame = ns(lladdr=None, options=options)
    try:
        pkt = ndp.parse(frame)
    except MalformedFrame:
        return
    # Accepted only if the options chain fills the payload exactly in whole non-empty options.
    i, lladdr = 0, None
    while i < len(options):
        assert options[i + 1] > 0
        if options[i] == ndp.OPT_SOURCE_LLADDR and lladdr is None:
            lladdr = options[i + 2:i + 8]
        i += 8 * options[i + 1]
    assert i == len(options)
    assert pkt.lladdr == lladdr


@given(st.lists(st.tuples(st.integers(0, 85), st.integers(0, 255)), min_size=1, max_size=4), st.booleans())
@settings(max_examples=2000)
def test_mutated_solicitations_are_rejected_or_consistent_with_scapy(mutations, fix_checksum):
    frame = Ether(ns())
    raw = bytearray(bytes(frame))
    for i, b in mutations:
        raw[i] = b
    data = bytes(raw)
    if fix_checksum:
        data = bytes(raw[:56]) + b"\x00\x00" + bytes(raw[58:])
        plen = min(int.from_bytes(raw[18:20], "big"), max(0, len(raw) - 54))
        cs = ndp.icmpv6_checksum(data[22:38], data[38:54], data[54:54 + plen])
        data = data[:56] + cs.to_bytes(2, "big") + data[58:]
    try:
        pkt = ndp.parse(data)
    except MalformedFrame:
        return
    s = Ether(data)
    assert s[IPv6].hlim == 255 and s[IPv6].nh == 58
    assert ipaddress.IPv6Address(pkt.target) == ipaddress.IPv6Address(s[IPv6].payload.tgt)
    if pkt.is_solicit:
        reply = ndp.build_solicited_na(pkt, MAC)
        assert checksum_ok(reply) and Ether(reply)[ICMPv6ND_NA].tgt == Ether(data)[IPv6].payload.tgt


@given(st.ip_addresses(v=6), st.ip_addresses(v=6), st.binary(min_size=6, max_size=6))
def test_answers_to_any_valid_solicitation_match_scapy(target, src, mac):
    sender_mac = bytes([mac[0] & 0xFE | 0x02]) + mac[1:]
    frame = ndp.build_solicit(sender_mac, src.packed, target.packed)
    try:
        pkt = ndp.parse(frame)
    except MalformedFrame:
        assert target.is_multicast or src.is_multicast
        return
    reply = Ether(ndp.build_solicited_na(pkt, MAC))
    assert checksum_ok(bytes(reply))
    v6 = ipaddress.IPv6Address  # scapy and ipaddress spell some addresses differently (::ffff:0:0)
    assert v6(reply[ICMPv6ND_NA].tgt) == target and v6(reply[IPv6].src) == target
    if src.is_unspecified:
        assert reply[IPv6].dst == "ff02::1" and reply[ICMPv6ND_NA].S == 0
    else:
        assert v6(reply[IPv6].dst) == src and reply.dst == sender_mac.hex(":") and reply[ICMPv6ND_NA].S == 1
