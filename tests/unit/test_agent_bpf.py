"""The BPF filters, run by the real kernel: a filter attached to one end of an AF_UNIX datagram
socket pair drops what it rejects, so a frame sent through the pair arrives iff the program
accepts it. (The packet-type check sees PACKET_HOST there; frames for another MAC or a foreign
VLAN are exercised on real interfaces in tests/netns.)"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether

from leifur.agent import arp, bpf, ndp

MAC = bytes.fromhex("020000000100")


def passes(program, frame: bytes) -> bool:
    """Whether the kernel, running `program`, lets `frame` through."""
    tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with tx, rx:
        rx.setblocking(False)
        bpf.attach(rx, program)
        tx.send(frame)
        try:
            got = rx.recv(65536)
        except BlockingIOError:
            return False
    assert got == frame
    return True


@pytest.fixture
def kernel():
    return passes


def who_has(target: str, sender: str = "192.0.2.62") -> bytes:
    return arp.build_request(MAC, sender, target)


def test_arp_filter_accepts_requests_for_owned_targets_only(kernel):
    prog = bpf.arp_filter(["192.0.2.40", "192.0.2.41"])
    assert kernel(prog, who_has("192.0.2.40"))
    assert kernel(prog, who_has("192.0.2.41"))
    assert not kernel(prog, who_has("192.0.2.42"))
    assert not kernel(prog, who_has("192.0.2.10"))


def test_arp_filter_accepts_frames_from_an_owned_sender_for_conflict_detection(kernel):
    prog = bpf.arp_filter(["192.0.2.40"])
    for frame in arp.build_gratuitous("192.0.2.40", bytes.fromhex("020000000099")):
        assert kernel(prog, frame)
    assert kernel(prog, who_has("192.0.2.62", sender="192.0.2.40"))


def test_arp_filter_with_separate_sender_set(kernel):
    prog = bpf.arp_filter(["192.0.2.40"], senders=["192.0.2.50"])
    assert kernel(prog, who_has("192.0.2.40"))
    assert not kernel(prog, who_has("192.0.2.50"))  # announce-only: the kernel answers, we only watch
    assert kernel(prog, who_has("192.0.2.62", sender="192.0.2.50"))
    assert not kernel(prog, who_has("192.0.2.62", sender="192.0.2.40"))


def test_arp_filter_checks_the_fixed_header(kernel):
    prog = bpf.arp_filter(["192.0.2.40"])
    good = who_has("192.0.2.40")
    assert kernel(prog, good + b"\x00" * 18)  # Ethernet padding
    assert not kernel(prog, good[:41])  # truncated: the load of the target IP fails
    assert not kernel(prog, good[:12] + b"\x08\x00" + good[14:])  # ethertype
    assert not kernel(prog, good[:14] + b"\x00\x06" + good[16:])  # htype
    assert not kernel(prog, good[:18] + b"\x06\x10" + good[20:])  # plen
    tagged = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=MAC.hex(":")) / Dot1Q(vlan=5) / ARP(pdst="192.0.2.40"))
    assert not kernel(prog, tagged)


def test_empty_sets_accept_nothing(kernel):
    assert bpf.arp_filter([]) == bpf.drop_all() == bpf.nd_filter([])
    assert not kernel(bpf.arp_filter([]), who_has("192.0.2.40"))
    assert not kernel(bpf.nd_filter([]), ndp.build_solicit(MAC, "2001:db8::100", "2001:db8::40"))


def test_a_large_v4_set_spans_blocks_and_still_matches_exactly(kernel):
    ips = [str(ipaddress.IPv4Address("198.51.100.0") + i) for i in range(1500)]
    prog = bpf.arp_filter(ips)
    assert len(prog) <= bpf.BPF_MAXINSNS and prog != bpf.arp_any()
    for ip in (ips[0], ips[249], ips[250], ips[251], ips[777], ips[-1]):
        assert kernel(prog, who_has(ip)), ip
    assert not kernel(prog, who_has("198.51.106.0"))
    assert not kernel(prog, who_has("192.0.2.40"))


def test_too_many_ips_fall_back_to_every_arp_frame(kernel):
    ips = [str(ipaddress.IPv4Address("198.51.100.0") + i) for i in range(3000)]
    prog = bpf.arp_filter(ips)
    assert prog == bpf.arp_any()
    assert kernel(prog, who_has("192.0.2.99"))
    assert not kernel(prog, ndp.build_solicit(MAC, "2001:db8::100", "2001:db8::40"))


def ns(target: str, src: str = "2001:db8::100") -> bytes:
    return ndp.build_solicit(MAC, src, target)


def na(target: str) -> bytes:
    return ndp.build_unsolicited_na(target, bytes.fromhex("020000000099"))


def test_nd_filter_accepts_solicitations_and_adverts_for_owned_targets(kernel):
    prog = bpf.nd_filter(["2001:db8::40", "2001:db8::41"])
    assert kernel(prog, ns("2001:db8::40"))
    assert kernel(prog, ns("2001:db8::41", src="::"))
    assert kernel(prog, na("2001:db8::40"))
    assert not kernel(prog, ns("2001:db8::42"))
    assert not kernel(prog, ns("2001:db8:1::40"))  # same low bits, other prefix
    assert not kernel(prog, na("2001:db8::42"))


def test_nd_filter_with_separate_advert_set(kernel):
    prog = bpf.nd_filter(["2001:db8::40"], advert_targets=["2001:db8::40", "2001:db8::50"])
    assert kernel(prog, ns("2001:db8::40"))
    assert not kernel(prog, ns("2001:db8::50"))
    assert kernel(prog, na("2001:db8::50"))
    assert kernel(prog, na("2001:db8::40"))


def test_nd_filter_checks_the_headers(kernel):
    prog = bpf.nd_filter(["2001:db8::40"])
    good = ns("2001:db8::40")
    assert kernel(prog, good + b"\x00" * 8)
    hop64 = good[:21] + b"\x40" + good[22:]
    assert not kernel(prog, hop64)
    eth = Ether(src=MAC.hex(":"), dst="33:33:ff:00:00:40")
    ext = bytes(eth / IPv6(src="2001:db8::100", dst="ff02::1:ff00:40", hlim=255) / IPv6ExtHdrHopByHop()
                / ICMPv6ND_NS(tgt="2001:db8::40"))
    assert not kernel(prog, ext)
    echo = bytes(eth / IPv6(src="2001:db8::100", dst="2001:db8::40", hlim=255) / ICMPv6EchoRequest(data=b"x" * 40))
    assert not kernel(prog, echo)
    assert not kernel(prog, good[:77])  # truncated target
    assert not kernel(prog, who_has("192.0.2.40"))
    # scapy as an independent builder of what must pass
    assert kernel(prog, bytes(eth / IPv6(src="2001:db8::100", dst="ff02::1:ff00:40", hlim=255)
                              / ICMPv6ND_NS(tgt="2001:db8::40")))
    assert kernel(prog, bytes(eth / IPv6(src="2001:db8::99", dst="ff02::1", hlim=255)
                              / ICMPv6ND_NA(tgt="2001:db8::40")))


def test_a_large_v6_set_across_prefixes_and_blocks(kernel):
    ips = [f"2001:db8::{i:x}" for i in range(1, 601)] + [f"2001:db8:{p:x}::1" for p in range(1, 40)]
    prog = bpf.nd_filter(ips)
    assert len(prog) <= bpf.BPF_MAXINSNS and prog != bpf.nd_any()
    for ip in ("2001:db8::1", "2001:db8::fb", "2001:db8::fc", "2001:db8::258", "2001:db8:27::1", "2001:db8:1::1"):
        assert kernel(prog, ns(ip)), ip
        assert kernel(prog, na(ip)), ip
    for ip in ("2001:db8::259", "2001:db8:28::1", "2001:db8:1::2", "2001:db9::1"):
        assert not kernel(prog, ns(ip)), ip


def test_too_many_v6_ips_fall_back_to_every_nd_frame(kernel):
    ips = [f"2001:db8:{i:x}::1" for i in range(1000)]  # no shared prefixes: 7+ instructions each
    prog = bpf.nd_filter(ips)
    assert prog == bpf.nd_any()
    assert kernel(prog, ns("2001:db8:ffff::1"))
    assert not kernel(prog, who_has("192.0.2.40"))


def test_assemble_rejects_programs_the_kernel_would():
    with pytest.raises(ValueError):
        bpf.assemble([])
    with pytest.raises(ValueError):
        bpf.assemble(bpf.drop_all() * (bpf.BPF_MAXINSNS + 1))


def test_conditional_jumps_beyond_255_are_refused_by_the_assembler():
    asm = bpf._Asm()
    asm.ld(bpf.BPF_W, 0)
    asm.jeq(1, "far")
    for _ in range(256):
        asm.ret(0)
    asm.label("far")
    asm.ret(bpf.ACCEPT)
    with pytest.raises(ValueError):
        asm.program()


@given(st.sets(st.ip_addresses(v=4), max_size=300), st.ip_addresses(v=4), st.booleans())
@settings(max_examples=150, deadline=None)
def test_v4_membership_matches_a_python_set(owned, probe, pick_member):
    owned_s = {str(ip) for ip in owned}
    if pick_member and owned_s:
        probe = ipaddress.IPv4Address(sorted(owned_s)[0])
    got = passes(bpf.arp_filter(owned_s, senders=[]), who_has(str(probe)))
    assert got == (str(probe) in owned_s)


@given(st.sets(st.ip_addresses(v=6), max_size=100), st.ip_addresses(v=6), st.booleans())
@settings(max_examples=150, deadline=None)
def test_v6_membership_matches_a_python_set(owned, probe, pick_member):
    owned_s = {str(ip) for ip in owned if not ip.is_multicast}
    if pick_member and owned_s:
        probe = ipaddress.IPv6Address(sorted(owned_s)[0])
    assert passes(bpf.nd_filter(owned_s), ns(str(probe))) == (str(probe) in owned_s)
