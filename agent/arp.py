"""ARP frames (Ethernet/IPv4, RFC 826 and RFC 5227): parse with full validation, build replies
and gratuitous announcements. Pure functions on bytes; no I/O.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

ETH_P_ARP = 0x0806
OP_REQUEST = 1
OP_REPLY = 2

BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ZERO_IP = b"\x00" * 4

ETH_HEADER_LEN = 14
ARP_LEN = 28
FRAME_LEN = ETH_HEADER_LEN + ARP_LEN  # without the padding to 60 bytes a NIC adds on the wire

# htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4: everything we handle starts so.
_FIXED = struct.pack("!HHBB", 1, 0x0800, 6, 4)
_ETHERTYPE = ETH_P_ARP.to_bytes(2, "big")


class MalformedFrame(ValueError):
    """The frame is not a well-formed packet of the kind expected (ARP or ND)."""


class ArpPacket(NamedTuple):
    eth_dst: bytes
    eth_src: bytes
    op: int
    sha: bytes  # sender hardware address
    spa: bytes  # sender protocol (IPv4) address, packed
    tha: bytes
    tpa: bytes

    @property
    def is_request(self) -> bool:
        return self.op == OP_REQUEST

    @property
    def is_probe(self) -> bool:
        """An RFC 5227 probe: a request with sender IP 0.0.0.0 (duplicate address detection)."""
        return self.op == OP_REQUEST and self.spa == ZERO_IP

    @property
    def is_gratuitous(self) -> bool:
        """Sender and target IP are the same: an announcement, not a question."""
        return self.spa == self.tpa


def is_unicast_mac(mac: bytes) -> bool:
    return len(mac) == 6 and not mac[0] & 1 and mac != ZERO_MAC


def _bad_sender_ip(spa: bytes) -> bool:
    # 0.0.0.0 is allowed (probes). Multicast, limited broadcast and loopback cannot be answered.
    return spa[0] >= 224 or spa[0] == 127


def parse(frame: bytes) -> ArpPacket:
    """Parse an Ethernet/IPv4 ARP request or reply; raise MalformedFrame for anything else.

    Bytes after the ARP payload (Ethernet padding) are ignored.
    """
    if len(frame) < FRAME_LEN:
        raise MalformedFrame(f"ARP frame of {len(frame)} bytes, need {FRAME_LEN}")
    if frame[12:14] != _ETHERTYPE:
        raise MalformedFrame(f"ethertype 0x{frame[12:14].hex()} is not ARP")
    if frame[14:20] != _FIXED:
        raise MalformedFrame(f"not Ethernet/IPv4 ARP (htype/ptype/hlen/plen {frame[14:20].hex()})")
    op = int.from_bytes(frame[20:22], "big")
    if op not in (OP_REQUEST, OP_REPLY):
        raise MalformedFrame(f"ARP op {op}")
    pkt = ArpPacket(frame[0:6], frame[6:12], op, frame[22:28], frame[28:32], frame[32:38], frame[38:42])
    if not is_unicast_mac(pkt.eth_src) or not is_unicast_mac(pkt.sha):
        raise MalformedFrame("ARP from a multicast, broadcast or zero MAC")
    if _bad_sender_ip(pkt.spa):
        raise MalformedFrame(f"ARP sender IP {ipaddress.IPv4Address(pkt.spa)}")
    if op == OP_REPLY and pkt.spa == ZERO_IP:
        raise MalformedFrame("ARP reply from 0.0.0.0")
    return pkt


def _frame(eth_dst: bytes, eth_src: bytes, op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    return b"".join((eth_dst, eth_src, _ETHERTYPE, _FIXED, op.to_bytes(2, "big"), sha, spa, tha, tpa))


def build_reply(request: ArpPacket, mac: bytes) -> bytes:
    """The reply to `request` from `mac`: unicast to the requester, as the Linux kernel answers
    (also for a probe from 0.0.0.0, which tells the prober the address is taken)."""
    return _frame(request.sha, mac, OP_REPLY, mac, request.tpa, request.sha, request.spa)


def packed_ipv4(ip: str | bytes) -> bytes:
    if isinstance(ip, bytes):
        if len(ip) != 4:
            raise ValueError("an IPv4 address is 4 bytes")
        return ip
    return ipaddress.IPv4Address(ip).packed


def build_gratuitous(ip: str | bytes, mac: bytes) -> tuple[bytes, bytes]:
    """A gratuitous ARP request and reply for `ip` at `mac`, both broadcast.

    The request is an RFC 5227 announcement (target MAC zero). In the reply the target MAC
    equals the sender MAC: Linux counts a reply as gratuitous only then, and only a gratuitous
    frame overrides a neighbour entry updated less than `locktime` ago.
    """
    spa = packed_ipv4(ip)
    return (_frame(BROADCAST, mac, OP_REQUEST, mac, spa, ZERO_MAC, spa),
            _frame(BROADCAST, mac, OP_REPLY, mac, spa, mac, spa))


def build_request(mac: bytes, spa: str | bytes, tpa: str | bytes) -> bytes:
    """A broadcast who-has `tpa` from `mac`/`spa` (for probes, tests and benchmarks)."""
    return _frame(BROADCAST, mac, OP_REQUEST, mac, packed_ipv4(spa), ZERO_MAC, packed_ipv4(tpa))
