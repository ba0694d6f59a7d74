"""Neighbor Discovery frames (RFC 4861): parse Neighbor Solicitations and Advertisements with
the validation of sections 7.1.1 and 7.1.2, build solicited and unsolicited advertisements.
Pure functions on bytes; no I/O.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from .arp import MalformedFrame, is_unicast_mac

ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136

OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2

FLAG_ROUTER = 0x80
FLAG_SOLICITED = 0x40
FLAG_OVERRIDE = 0x20

UNSPECIFIED = b"\x00" * 16
ALL_NODES = ipaddress.IPv6Address("ff02::1").packed
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
_SOLICITED_PREFIX = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13]

ETH_HEADER_LEN = 14
IP6_HEADER_LEN = 40
ND_LEN = 24  # type, code, checksum, flags/reserved, target
_ICMP = ETH_HEADER_LEN + IP6_HEADER_LEN
MIN_FRAME_LEN = _ICMP + ND_LEN

_ETHERTYPE = ETH_P_IPV6.to_bytes(2, "big")


class NdPacket(NamedTuple):
    eth_dst: bytes
    eth_src: bytes
    src: bytes  # IPv6 source, packed
    dst: bytes
    type: int  # NEIGHBOR_SOLICIT or NEIGHBOR_ADVERT
    flags: int  # R/S/O bits of an NA (the first byte after the checksum); 0 for an NS
    target: bytes
    lladdr: bytes | None  # source link-layer option of an NS, target link-layer option of an NA

    @property
    def is_solicit(self) -> bool:
        return self.type == NEIGHBOR_SOLICIT

    @property
    def is_dad(self) -> bool:
        """A duplicate address detection probe: an NS from the unspecified address."""
        return self.type == NEIGHBOR_SOLICIT and self.src == UNSPECIFIED


def packed_ipv6(ip: str | bytes) -> bytes:
    if isinstance(ip, bytes):
        if len(ip) != 16:
            raise ValueError("an IPv6 address is 16 bytes")
        return ip
    return ipaddress.IPv6Address(ip).packed


def solicited_node(ip: str | bytes) -> bytes:
    """The solicited-node multicast group of `ip` (ff02::1:ffXX:XXXX), packed."""
    return _SOLICITED_PREFIX + packed_ipv6(ip)[13:]


def multicast_mac(group: str | bytes) -> bytes:
    """The Ethernet address of an IPv6 multicast group (RFC 2464: 33:33 and the low 32 bits)."""
    return b"\x33\x33" + packed_ipv6(group)[12:]


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def icmpv6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """The ICMPv6 checksum over the pseudo-header and `icmp` (whose checksum field is included
    as it stands: zero it to compute, keep it to verify, which then yields 0)."""
    total = _sum16(src) + _sum16(dst) + _sum16(struct.pack("!IxxxB", len(icmp), IPPROTO_ICMPV6)) + _sum16(icmp)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _options(data: bytes) -> dict[int, bytes]:
    """Type -> body of the first option of each type; MalformedFrame if any option is malformed."""
    found: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        if len(data) - i < 2:
            raise MalformedFrame("truncated ND option")
        kind, units = data[i], data[i + 1]
        if units == 0:
            raise MalformedFrame("ND option of length 0")
        end = i + 8 * units
        if end > len(data):
            raise MalformedFrame("ND option runs past the packet")
        found.setdefault(kind, data[i + 2:end])
        i = end
    return found


def parse(frame: bytes) -> NdPacket:
    """Parse a Neighbor Solicitation or Advertisement in an Ethernet frame; raise MalformedFrame
    for anything else. Bytes after the IPv6 payload (Ethernet padding) are ignored."""
    if len(frame) < MIN_FRAME_LEN:
        raise MalformedFrame(f"ND frame of {len(frame)} bytes, need {MIN_FRAME_LEN}")
    if frame[12:14] != _ETHERTYPE or frame[14] >> 4 != 6:
        raise MalformedFrame("not IPv6")
    payload_len = int.from_bytes(frame[18:20], "big")
    if _ICMP + payload_len > len(frame):
        raise MalformedFrame(f"IPv6 payload length {payload_len} exceeds the frame")
    if payload_len < ND_LEN:
        raise MalformedFrame(f"ICMPv6 length {payload_len} too short for ND")
    if frame[20] != IPPROTO_ICMPV6:
        raise MalformedFrame(f"next header {frame[20]} is not ICMPv6")
    if frame[21] != 255:
        raise MalformedFrame(f"hop limit {frame[21]}, ND requires 255 (it may have crossed a router)")
    kind, code = frame[_ICMP], frame[_ICMP + 1]
    if kind not in (NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT):
        raise MalformedFrame(f"ICMPv6 type {kind} is not NS or NA")
    if code != 0:
        raise MalformedFrame(f"ICMPv6 code {code}")
    src, dst = frame[22:38], frame[38:54]
    icmp = frame[_ICMP:_ICMP + payload_len]
    if icmpv6_checksum(src, dst, icmp) != 0:
        raise MalformedFrame("bad ICMPv6 checksum")
    target = icmp[8:24]
    if target[0] == 0xFF:
        raise MalformedFrame("ND target is multicast")
    if src[0] == 0xFF:
        raise MalformedFrame("ND from a multicast source")
    if not is_unicast_mac(frame[6:12]):
        raise MalformedFrame("ND from a multicast, broadcast or zero MAC")
    options = _options(icmp[ND_LEN:])
    lladdr_opt = options.get(OPT_SOURCE_LLADDR if kind == NEIGHBOR_SOLICIT else OPT_TARGET_LLADDR)
    lladdr = lladdr_opt[:6] if lladdr_opt is not None else None
    if lladdr is not None and not is_unicast_mac(lladdr):
        raise MalformedFrame("ND link-layer option is not a unicast MAC")
    flags = 0
    if kind == NEIGHBOR_SOLICIT:
        if src == UNSPECIFIED:
            if dst[:13] != _SOLICITED_PREFIX:
                raise MalformedFrame("DAD probe not sent to a solicited-node group")
            if lladdr_opt is not None:
                raise MalformedFrame("DAD probe with a source link-layer option")
    else:
        flags = icmp[4] & (FLAG_ROUTER | FLAG_SOLICITED | FLAG_OVERRIDE)
        if dst[0] == 0xFF and flags & FLAG_SOLICITED:
            raise MalformedFrame("solicited NA to a multicast destination")
        if src == UNSPECIFIED:
            raise MalformedFrame("NA from the unspecified address")
    return NdPacket(frame[0:6], frame[6:12], src, dst, kind, flags, target, lladdr)


def _advert(eth_dst: bytes, mac: bytes, src: bytes, dst: bytes, flags: int, target: bytes) -> bytes:
    body = bytearray(struct.pack("!BBHB3x16sBB6s", NEIGHBOR_ADVERT, 0, 0, flags, target, OPT_TARGET_LLADDR, 1, mac))
    struct.pack_into("!H", body, 2, icmpv6_checksum(src, dst, bytes(body)))
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), IPPROTO_ICMPV6, 255, src, dst)
    return eth_dst + mac + _ETHERTYPE + ip6 + bytes(body)


def build_solicited_na(ns: NdPacket, mac: bytes) -> bytes:
    """The Neighbor Advertisement answering `ns` for its target at `mac` (RFC 4861 7.2.4).

    Sent from the target address, with the override flag and our MAC as target link-layer
    option; to the solicitor (solicited flag set), or to all nodes if the NS was a DAD probe.
    """
    if ns.src == UNSPECIFIED:
        return _advert(ALL_NODES_MAC, mac, ns.target, ALL_NODES, FLAG_OVERRIDE, ns.target)
    eth_dst = ns.lladdr if ns.lladdr is not None else ns.eth_src
    return _advert(eth_dst, mac, ns.target, ns.src, FLAG_SOLICITED | FLAG_OVERRIDE, ns.target)


def build_unsolicited_na(ip: str | bytes, mac: bytes) -> bytes:
    """An unsolicited Neighbor Advertisement of `ip` at `mac` to all nodes, override flag set,
    so neighbours replace the MAC they have cached (RFC 4861 7.2.6)."""
    target = packed_ipv6(ip)
    return _advert(ALL_NODES_MAC, mac, target, ALL_NODES, FLAG_OVERRIDE, target)


def build_solicit(mac: bytes, src: str | bytes, target: str | bytes) -> bytes:
    """A Neighbor Solicitation for `target` to its solicited-node group, with our MAC as source
    link-layer option (omitted for a DAD probe from ::). For probes, tests and benchmarks."""
    src_b, target_b = packed_ipv6(src), packed_ipv6(target)
    group = solicited_node(target_b)
    body = bytearray(struct.pack("!BBH4x16s", NEIGHBOR_SOLICIT, 0, 0, target_b))
    if src_b != UNSPECIFIED:
        body += struct.pack("!BB6s", OPT_SOURCE_LLADDR, 1, mac)
    struct.pack_into("!H", body, 2, icmpv6_checksum(src_b, group, bytes(body)))
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), IPPROTO_ICMPV6, 255, src_b, group)
    return multicast_mac(group) + mac + _ETHERTYPE + ip6 + bytes(body)
