"""Classic BPF socket filters for the ARP/NDP packet path.

The kernel runs these on every frame of the bound ethertype, so user space wakes only for
frames that concern an IP this node announces. Programs are lists of (code, jt, jf, k) built
by pure functions; `attach` installs one with SO_ATTACH_FILTER, which replaces the previous
filter atomically. User space re-checks every frame anyway: frames queued before a swap
passed the old filter, and the fallback filters (too many IPs) pass every ARP / NS / NA.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence

Instruction = tuple[int, int, int, int]

BPF_MAXINSNS = 4096
SO_ATTACH_FILTER = 26

# Instruction classes and modes (linux/filter.h).
BPF_LD, BPF_JMP, BPF_RET = 0x00, 0x05, 0x06
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_ABS = 0x20
BPF_JA, BPF_JEQ, BPF_JGT = 0x00, 0x10, 0x20
BPF_K = 0x00

# Ancillary data, loaded from negative offsets.
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
PACKET_MULTICAST = 2  # PACKET_HOST 0, BROADCAST 1, MULTICAST 2; then OTHERHOST, OUTGOING, LOOPBACK...

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136

ACCEPT = 0xFFFF  # snap length: ARP and ND frames are far shorter
DROP = 0

# Frame offsets (Ethernet header of 14 bytes, no VLAN tag in the data).
_ETHERTYPE = 12
_ARP_HTYPE_PTYPE = 14  # htype 1 (Ethernet), ptype 0x0800, as one word
_ARP_HLEN_PLEN = 18  # hlen 6, plen 4, as one half-word
_ARP_SPA = 28
_ARP_TPA = 38
_IP6_NEXT_HEADER = 20
_IP6_HOP_LIMIT = 21
_ICMP6_TYPE = 54
_ND_TARGET = 62

# Keeps every conditional jump to a block's accept within the 8-bit jump offset.
_BLOCK = 250


class _Asm:
    """A tiny assembler: jumps name labels, resolved to relative offsets at the end."""

    def __init__(self) -> None:
        # (code, jt, jf, k): jt and jf name the labels of a conditional jump (None falls through);
        # only ja() puts a label in k. program() resolves them.
        self._code: list[tuple[int, str | None, str | None, int | str]] = []
        self._labels: dict[str, int] = {}
        self._n = 0

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def ld(self, size: int, offset: int) -> None:
        self._code.append((BPF_LD | size | BPF_ABS, None, None, offset & 0xFFFFFFFF))

    def jeq(self, k: int, jt: str | None = None, jf: str | None = None) -> None:
        """Jump to label jt if A == k, to jf otherwise; None falls through."""
        self._code.append((BPF_JMP | BPF_JEQ | BPF_K, jt, jf, k))

    def jgt(self, k: int, jt: str | None = None, jf: str | None = None) -> None:
        self._code.append((BPF_JMP | BPF_JGT | BPF_K, jt, jf, k))

    def ja(self, target: str) -> None:
        self._code.append((BPF_JMP | BPF_JA, None, None, target))

    def ret(self, k: int) -> None:
        self._code.append((BPF_RET | BPF_K, None, None, k))

    def program(self) -> list[Instruction]:
        out: list[Instruction] = []
        for pc, (code, jt, jf, k) in enumerate(self._code):
            if isinstance(k, str):
                out.append((code, 0, 0, self._offset(pc, k, wide=True)))
            else:
                out.append((code, self._offset(pc, jt), self._offset(pc, jf), k))
        return out

    def _offset(self, pc: int, target: str | None, wide: bool = False) -> int:
        if target is None:
            return 0
        off = self._labels[target] - pc - 1
        if off < 0 or (not wide and off > 255):
            raise ValueError(f"jump from {pc} to {target} out of range ({off})")
        return off


def _prelude(asm: _Asm, ethertype: int) -> None:
    # Only frames addressed to this host (unicast to us, broadcast, multicast), as the kernel's own
    # ARP and IPv6 input: this drops our own transmissions (OUTGOING), frames for another MAC seen
    # in promiscuous mode, and frames tagged for a VLAN without a device here, which the kernel
    # untags and marks OTHERHOST before handing them to sockets on the parent interface.
    # Conditional jumps reach 255 instructions at most, so the header checks drop to "early" just
    # after them, never to the final "drop" beyond the address lists.
    asm.ld(BPF_W, SKF_AD_OFF + SKF_AD_PKTTYPE)
    asm.jgt(PACKET_MULTICAST, "early")
    asm.ld(BPF_H, _ETHERTYPE)
    asm.jeq(ethertype, None, "early")


def _v4_words(ips: Iterable[str | bytes]) -> list[int]:
    return sorted({int.from_bytes(_packed(ip, 4), "big") for ip in ips})


def _v6_words(ips: Iterable[str | bytes]) -> list[tuple[int, int, int, int]]:
    return sorted({struct.unpack("!4I", _packed(ip, 16)) for ip in ips})


def _packed(ip: str | bytes, size: int) -> bytes:
    if isinstance(ip, bytes):
        if len(ip) != size:
            raise ValueError(f"expected a {size}-byte address, got {len(ip)} bytes")
        return ip
    packed = ipaddress.ip_address(ip).packed
    if len(packed) != size:
        raise ValueError(f"{ip} is not an IPv{4 if size == 4 else 6} address")
    return packed


def _match_loaded(asm: _Asm, words: Sequence[int]) -> None:
    """Return ACCEPT if A is one of `words`; fall through (A unchanged) otherwise."""
    for start in range(0, len(words), _BLOCK):
        hit, miss = asm.fresh("hit"), asm.fresh("miss")
        for w in words[start:start + _BLOCK]:
            asm.jeq(w, hit)
        asm.ja(miss)
        asm.label(hit)
        asm.ret(ACCEPT)
        asm.label(miss)


def _match_v4(asm: _Asm, offset: int, words: Sequence[int]) -> None:
    """Return ACCEPT if the word at `offset` is one of `words`; fall through otherwise."""
    if words:
        asm.ld(BPF_W, offset)
        _match_loaded(asm, words)


def _match_v6(asm: _Asm, offset: int, addrs: Sequence[tuple[int, int, int, int]]) -> None:
    """Return ACCEPT if the 16 bytes at `offset` are one of `addrs`; fall through otherwise.

    Addresses are grouped by their first 96 bits (owned IPs mostly share a prefix), so each
    address costs one comparison and each group seven instructions.
    """
    groups: dict[tuple[int, int, int], list[int]] = {}
    for a in addrs:
        groups.setdefault(a[:3], []).append(a[3])
    for prefix, lows in groups.items():
        ok, bad, nxt = asm.fresh("ok"), asm.fresh("bad"), asm.fresh("next")
        for i, w in enumerate(prefix):
            asm.ld(BPF_W, offset + 4 * i)
            asm.jeq(w, ok if i == 2 else None, bad)
        asm.label(bad)
        asm.ja(nxt)
        asm.label(ok)
        asm.ld(BPF_W, offset + 12)
        _match_loaded(asm, lows)
        asm.label(nxt)


def _early_drop(asm: _Asm) -> None:
    asm.ja("body")
    asm.label("early")
    asm.ret(DROP)
    asm.label("body")


def _arp_header(asm: _Asm) -> None:
    asm.ld(BPF_W, _ARP_HTYPE_PTYPE)
    asm.jeq(0x0001_0800, None, "early")
    asm.ld(BPF_H, _ARP_HLEN_PLEN)
    asm.jeq(0x0604, None, "early")
    _early_drop(asm)


def _nd_header(asm: _Asm) -> None:
    # NS and NA only directly after the fixed IPv6 header; RFC 4861 requires hop limit 255 for both.
    asm.ld(BPF_B, _IP6_NEXT_HEADER)
    asm.jeq(IPPROTO_ICMPV6, None, "early")
    asm.ld(BPF_B, _IP6_HOP_LIMIT)
    asm.jeq(255, None, "early")
    asm.ld(BPF_B, _ICMP6_TYPE)
    asm.jeq(ND_NEIGHBOR_SOLICIT, "body")
    asm.jeq(ND_NEIGHBOR_ADVERT, "body", "early")
    asm.label("early")
    asm.ret(DROP)
    asm.label("body")


def _finish(asm: _Asm) -> list[Instruction]:
    asm.label("drop")
    asm.ret(DROP)
    return asm.program()


def drop_all() -> list[Instruction]:
    """Accepts nothing: the filter of an interface that announces no IP of this family."""
    return [(BPF_RET | BPF_K, 0, 0, DROP)]


def arp_any() -> list[Instruction]:
    """Every Ethernet/IPv4 ARP frame addressed to this host (the fallback when the set is too large)."""
    asm = _Asm()
    _prelude(asm, ETH_P_ARP)
    _arp_header(asm)
    asm.ret(ACCEPT)
    return asm.program()


def arp_filter(targets: Iterable[str | bytes], senders: Iterable[str | bytes] | None = None) -> list[Instruction]:
    """Incoming ARP frames whose target IP is in `targets` (requests to answer) or whose sender IP
    is in `senders` (someone else claiming one of our IPs; defaults to `targets`).

    Empty sets accept nothing; a set too large for BPF_MAXINSNS falls back to `arp_any()`.
    """
    t = _v4_words(targets)
    s = t if senders is None else _v4_words(senders)
    if not t and not s:
        return drop_all()
    asm = _Asm()
    _prelude(asm, ETH_P_ARP)
    _arp_header(asm)
    _match_v4(asm, _ARP_TPA, t)
    _match_v4(asm, _ARP_SPA, s)
    prog = _finish(asm)
    return prog if len(prog) <= BPF_MAXINSNS else arp_any()


def nd_any() -> list[Instruction]:
    """Every Neighbor Solicitation and Advertisement addressed to this host (the fallback)."""
    asm = _Asm()
    _prelude(asm, ETH_P_IPV6)
    _nd_header(asm)
    asm.ret(ACCEPT)
    return asm.program()


def nd_filter(solicit_targets: Iterable[str | bytes],
              advert_targets: Iterable[str | bytes] | None = None) -> list[Instruction]:
    """Incoming Neighbor Solicitations whose target is in `solicit_targets` (to answer) and
    Neighbor Advertisements whose target is in `advert_targets` (someone else claiming one of
    our IPs; defaults to `solicit_targets`). ICMPv6 must follow the fixed IPv6 header directly.

    Empty sets accept nothing; a set too large for BPF_MAXINSNS falls back to `nd_any()`.
    """
    ns = _v6_words(solicit_targets)
    na = ns if advert_targets is None else _v6_words(advert_targets)
    if not ns and not na:
        return drop_all()
    asm = _Asm()
    _prelude(asm, ETH_P_IPV6)
    _nd_header(asm)
    # The header checks let only NS and NA through; the NA list is reached by an unconditional
    # jump, which has no range limit, over the NS list.
    if ns == na:
        # Both types match the same targets (the header checks let nothing else through).
        _match_v6(asm, _ND_TARGET, ns)
        prog = _finish(asm)
        return prog if len(prog) <= BPF_MAXINSNS else nd_any()
    asm.ld(BPF_B, _ICMP6_TYPE)
    asm.jeq(ND_NEIGHBOR_SOLICIT, "ns")
    asm.ja("na")
    asm.label("ns")
    _match_v6(asm, _ND_TARGET, ns)
    asm.ja("drop")
    asm.label("na")
    _match_v6(asm, _ND_TARGET, na)
    prog = _finish(asm)
    return prog if len(prog) <= BPF_MAXINSNS else nd_any()


def assemble(program: Sequence[Instruction]) -> bytes:
    """The program as an array of struct sock_filter."""
    if not 1 <= len(program) <= BPF_MAXINSNS:
        raise ValueError(f"a BPF program has 1..{BPF_MAXINSNS} instructions, got {len(program)}")
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach(sock: socket.socket, program: Sequence[Instruction]) -> None:
    """Install `program` on `sock`, atomically replacing any filter it had."""
    code = ctypes.create_string_buffer(assemble(program))
    fprog = _SockFprog(len(program), ctypes.addressof(code))
    # The kernel copies the program during the call; `code` only needs to live until it returns.
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
