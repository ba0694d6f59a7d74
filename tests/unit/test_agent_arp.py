"""ARP frames: parsed and built by agent.arp, checked against scapy as an independent oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Padding

from leifur.agent import arp
from leifur.agent.arp import MalformedFrame

MAC = bytes.fromhex("020000000001")
CLIENT_MAC = "02:00:00:00:01:00"


def request(pdst="192.0.2.40", psrc="192.0.2.62", hwsrc=CLIENT_MAC, src=CLIENT_MAC, op=1, **kw) -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=src) / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst, **kw))


def test_parses_a_request_as_scapy_built_it():
    pkt = arp.parse(request())
    assert pkt.is_request and not pkt.is_probe and not pkt.is_gratuitous
    assert pkt.sha == bytes.fromhex(CLIENT_MAC.replace(":", ""))
    assert pkt.eth_src == pkt.sha and pkt.eth_dst == arp.BROADCAST
    assert pkt.spa == bytes([192, 0, 2, 62]) and pkt.tpa == bytes([192, 0, 2, 40])


def test_ethernet_padding_is_ignored():
    frame = bytes(Ether(request()) / Padding(b"\x00" * 18))
    assert len(frame) == 60
    assert arp.parse(frame) == arp.parse(request())


def test_reply_answers_the_requester_and_scapy_agrees():
    reply = Ether(arp.build_reply(arp.parse(request()), MAC))
    assert reply.dst == CLIENT_MAC and reply.src == "02:00:00:00:00:01" and reply.type == 0x0806
    a = reply[ARP]
    assert (a.hwtype, a.ptype, a.hwlen, a.plen, a.op) == (1, 0x0800, 6, 4, 2)
    assert (a.hwsrc, a.psrc, a.hwdst, a.pdst) == ("02:00:00:00:00:01", "192.0.2.40", CLIENT_MAC, "192.0.2.62")
    assert len(bytes(reply)) == arp.FRAME_LEN


def test_a_probe_from_0_0_0_0_is_answered_to_the_prober():
    pkt = arp.parse(request(psrc="0.0.0.0"))
    assert pkt.is_probe
    a = Ether(arp.build_reply(pkt, MAC))[ARP]
    assert a.pdst == "0.0.0.0" and a.hwdst == CLIENT_MAC and a.psrc == "192.0.2.40"


def test_gratuitous_request_and_reply_are_broadcast_announcements():
    req, rep = (Ether(f) for f in arp.build_gratuitous("192.0.2.40", MAC))
    for f in (req, rep):
        assert f.dst == "ff:ff:ff:ff:ff:ff" and f.src == "02:00:00:00:00:01"
        assert f[ARP].psrc == f[ARP].pdst == "192.0.2.40" and f[ARP].hwsrc == "02:00:00:00:00:01"
    assert req[ARP].op == 1 and req[ARP].hwdst == "00:00:00:00:00:00"
    # Linux treats a reply as gratuitous (overriding a fresh neighbour entry) only if tha == sha.
    assert rep[ARP].op == 2 and rep[ARP].hwdst == "02:00:00:00:00:01"
    for f in (req, rep):
        pkt = arp.parse(bytes(f))
        assert pkt.is_gratuitous


def test_build_request_round_trips():
    frame = arp.build_request(MAC, "192.0.2.62", "192.0.2.40")
    pkt = arp.parse(frame)
    assert pkt.is_request and pkt.sha == MAC and pkt.tpa == bytes([192, 0, 2, 40])
    a = Ether(frame)[ARP]
    assert (a.op, a.psrc, a.pdst, a.hwdst) == (1, "192.0.2.62", "192.0.2.40", "00:00:00:00:00:00")


@pytest.mark.parametrize("frame, why", [
    (request()[:41], "truncated"),
    (b"", "empty"),
    (bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC, type=0x0800) / ARP(pdst="192.0.2.40")), "ethertype"),
    (request(hwtype=6), "htype"),
    (request(ptype=0x86DD), "ptype"),
    (request(hwlen=8), "hlen"),
    (request(plen=16), "plen"),
    (request(op=3), "op"),
    (request(op=0), "op 0"),
    (request(hwsrc="01:00:5e:00:00:01"), "multicast sender MAC"),
    (request(hwsrc="ff:ff:ff:ff:ff:ff"), "broadcast sender MAC"),
    (request(hwsrc="00:00:00:00:00:00"), "zero sender MAC"),
    (request(src="ff:ff:ff:ff:ff:ff"), "broadcast Ethernet source"),
    (request(psrc="224.0.0.1"), "multicast sender IP"),
    (request(psrc="255.255.255.255"), "broadcast sender IP"),
    (request(psrc="127.0.0.1"), "loopback sender IP"),
    (bytes(Ether(dst=CLIENT_MAC, src=CLIENT_MAC) / ARP(op=2, hwsrc=CLIENT_MAC, psrc="0.0.0.0")), "reply from 0"),
])
def test_malformed_frames_are_rejected(frame, why):
    with pytest.raises(MalformedFrame):
        arp.parse(frame)


def test_every_truncation_of_a_request_is_rejected():
    frame = request()
    for n in range(arp.FRAME_LEN):
        with pytest.raises(MalformedFrame):
            arp.parse(frame[:n])


@given(st.binary(max_size=128))
@settings(max_examples=2000)
def test_random_bytes_parse_or_raise_malformed(data):
    try:
        pkt = arp.parse(data)
    except MalformedFrame:
        return
    assert isinstance(pkt, arp.ArpPacket)


@given(st.lists(st.tuples(st.integers(0, 59), st.integers(0, 255)), max_size=6))
@settings(max_examples=2000)
def test_mutated_requests_parse_consistently_with_scapy(mutations):
    frame = bytearray(bytes(Ether(request()) / Padding(b"\x00" * 18)))
    for i, b in mutations:
        frame[i] = b
    try:
        pkt = arp.parse(bytes(frame))
    except MalformedFrame:
        return
    a = Ether(bytes(frame))[ARP]
    assert pkt.op == a.op and pkt.spa == bytes(map(int, a.psrc.split("."))) and pkt.tpa == bytes(
        map(int, a.pdst.split(".")))
    assert pkt.sha.hex(":") == a.hwsrc
    reply = Ether(arp.build_reply(pkt, MAC))[ARP]
    assert reply.op == 2 and reply.psrc == a.pdst and reply.pdst == a.psrc


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.binary(min_size=6, max_size=6))
def test_replies_to_any_valid_request_match_scapy(target, sender, mac):
    sender_mac = bytes([mac[0] & 0xFE | 0x02]) + mac[1:]  # unicast
    frame = arp.build_request(sender_mac, sender.packed, target.packed)
    try:
        pkt = arp.parse(frame)
    except MalformedFrame:
        assert sender.packed[0] >= 224 or sender.packed[0] == 127
        return
    reply = Ether(arp.build_reply(pkt, MAC))
    assert reply.dst == sender_mac.hex(":")
    assert (reply[ARP].psrc, reply[ARP].pdst) == (str(target), str(sender))
