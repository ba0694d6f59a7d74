"""The ARP/NDP responder on a real LAN of namespaces: it runs in node1 (`python -m agent.responder`,
driven over stdin), the client asks with the kernel's own tools (arping, ping, ip neigh) and with
frames built by scapy, sent and captured on a raw socket. scapy dissects what comes back."""

from __future__ import annotations

import errno
import ipaddress
import json
import queue
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    in6_getnsma,
    in6_getnsmac,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

pytestmark = [pytest.mark.netns]

FAKE_MAC = "02:00:00:00:ee:ee"

# Runs in the client namespace: sends frames (paced, bounded in count and time) from a thread
# while capturing on eth0 with kernel timestamps; prints "ready" once capturing, then a JSON
# report. Only frames of the given ethertypes from the given source MAC are kept.
CLIENT = r"""
import json, socket, struct, sys, threading, time
a = json.loads(sys.argv[1])
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
rx.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
SO_TIMESTAMPNS = 35
rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
rx.bind(("eth0", 3))
rx.settimeout(0.05)
frames = [bytes.fromhex(h) for h in a.get("send", [])]
src = bytes.fromhex(a["src"].replace(":", "")) if a.get("src") else None
types = {bytes.fromhex(t) for t in a.get("types", ["0806", "86dd"])}
report = {"sent": 0, "send_start": None, "send_end": None}
done = threading.Event()

def sender():
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    tx.bind(("eth0", 0))
    n, rate = a.get("count", len(frames)), a.get("rate", 0)
    start = time.monotonic()
    deadline = start + a.get("max_seconds", 20)
    report["send_start"] = time.time()
    for i in range(n):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if time.monotonic() > deadline:
            break
        tx.send(frames[i % len(frames)])
        report["sent"] += 1
    report["send_end"] = time.time()
    done.set()

print("ready", flush=True)
if frames:
    threading.Thread(target=sender, daemon=True).start()
else:
    done.set()
got, end = [], None
while True:
    if end is None and done.is_set():
        end = time.monotonic() + a.get("listen", 1.5)
    if end is not None and time.monotonic() > end:
        break
    try:
        data, anc, _, addr = rx.recvmsg(4096, 64)
    except (TimeoutError, socket.timeout):
        continue
    if addr[2] == 4 or data[12:14] not in types or (src and data[6:12] != src):
        continue
    ts = None
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", cdata[:16])
            ts = sec + nsec / 1e9
    if len(got) < a.get("keep", 100000):
        got.append([ts, data.hex()])
report["frames"] = got
print(json.dumps(report), flush=True)
"""


def wait_for(cond: Callable[[], object], timeout: float = 15, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        res = cond()
        if res:
            return res
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class ResponderProc:
    """`python -m agent.responder` in a node namespace, driven with JSON lines on stdin."""

    def __init__(self, lab, node, tmp_path, answer=(), announce_only=(), count=1, interval=0.2):
        # count=1 by default: the whole burst is out before "ready", so captures see only answers.
        argv = [sys.executable, "-m", "leifur.agent.responder", "--interface", "eth0", "--count", str(count),
                "--interval", str(interval)]
        argv += [x for ip in answer for x in ("--ip", ip)]
        argv += [x for ip in announce_only for x in ("--announce-only", ip)]
        self.log = tmp_path / f"responder-{node.name}.log"
        self.proc = lab.popen(node.netns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=self.log.open("w"), text=True)
        self.replies: queue.Queue[dict] = queue.Queue()
        self.conflicts: list[tuple[str, str]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self._reply(what="ready")
        assert self.ready.get("ready"), self.ready

    def _read(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "conflict" in msg:
                self.conflicts.append(tuple(msg["conflict"]))
            else:
                self.replies.put(msg)

    def _reply(self, timeout: float = 30, what: str = "reply") -> dict:
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {what} from the responder; log:\n{self.log.read_text()[-3000:]}") from None

    def cmd(self, obj: dict) -> dict:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        res = self._reply()
        assert "error" not in res, res
        return res

    def set(self, answer=(), announce_only=()) -> dict:
        return self.cmd({"set": {"answer": list(answer), "announce_only": list(announce_only)}})

    def counters(self) -> dict:
        return self.cmd({"counters": True})["counters"]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class Capture:
    """The CLIENT script: started, it captures at once; `result()` waits for its report."""

    def __init__(self, lab, src: str | None, send=(), count=None, rate=0, listen=1.5, max_seconds=20):
        args = {"send": [bytes(f).hex() for f in send], "src": src, "rate": rate, "listen": listen,
                "max_seconds": max_seconds}
        if count is not None:
            args["count"] = count
        self.timeout = max_seconds + listen + 30
        self.proc = lab.popen(lab.client.netns, [sys.executable, "-c", CLIENT, json.dumps(args)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", line + self.proc.stderr.read()

    def result(self) -> dict:
        out, err = self.proc.communicate(timeout=self.timeout)
        assert self.proc.returncode == 0, err
        report = json.loads(out)
        report["frames"] = [(ts, Ether(bytes.fromhex(h))) for ts, h in report["frames"]]
        return report


def capture(lab, src, send=(), **kw) -> dict:
    return Capture(lab, src, send, **kw).result()


def arp_replies(report) -> list[Ether]:
    return [f for _, f in report["frames"] if ARP in f and f[ARP].op == 2]


def adverts(report) -> list[Ether]:
    return [f for _, f in report["frames"] if ICMPv6ND_NA in f]


def checksum_ok(frame: Ether) -> bool:
    na = frame[ICMPv6ND_NA]
    sent = na.cksum
    copy = Ether(bytes(frame))
    del copy[ICMPv6ND_NA].cksum
    return Ether(bytes(copy))[ICMPv6ND_NA].cksum == sent


@pytest.fixture
def net(lab, tmp_path):
    """Addresses of this lab and a way to start responders."""
    slot = lab.slot

    class Net:
        node = lab.nodes[0]
        client = lab.client
        ip4 = f"192.0.2.{64 * slot + 40}"
        ip4b = f"192.0.2.{64 * slot + 41}"
        ip4_free = f"192.0.2.{64 * slot + 42}"
        ip6 = canon(f"2001:db8:0:{slot}::40")
        ip6b = canon(f"2001:db8:0:{slot}::41")
        ip6_free = canon(f"2001:db8:0:{slot}::42")
        client_ip6 = canon(lab.client.ip6)

        @staticmethod
        def responder(**kw) -> ResponderProc:
            return ResponderProc(lab, lab.nodes[0], tmp_path, **kw)

        @staticmethod
        def who_has(ip: str, dst: str = "ff:ff:ff:ff:ff:ff", psrc: str | None = None, **arp) -> Ether:
            return Ether(src=lab.client.mac, dst=dst) / ARP(op=1, hwsrc=lab.client.mac, psrc=psrc or lab.client.ip4,
                                                            pdst=ip, **arp)

        @staticmethod
        def solicit(ip: str, src: str | None = None, dst_mac: str | None = None, dst: str | None = None,
                    lladdr: bool = True) -> Ether:
            src = canon(lab.client.ip6) if src is None else src
            group = in6_getnsma(socket.inet_pton(socket.AF_INET6, ip))
            dst = dst or str(ipaddress.IPv6Address(group))
            pkt = (Ether(src=lab.client.mac, dst=dst_mac or in6_getnsmac(group))
                   / IPv6(src=src, dst=dst, hlim=255) / ICMPv6ND_NS(tgt=ip))
            return pkt / ICMPv6NDOptSrcLLAddr(lladdr=lab.client.mac) if lladdr else pkt

    return Net


def canon(ip: str) -> str:
    """The form scapy prints (the lab writes 2001:db8:0:0::a for slot 0)."""
    return str(ipaddress.ip_address(ip))


def neigh_mac(lab, ip: str) -> str | None:
    fam = "-6" if ":" in ip else "-4"
    out = lab.run(lab.client.netns, ["ip", fam, "neigh", "show", ip, "dev", "eth0"]).stdout.split()
    return out[out.index("lladdr") + 1].lower() if "lladdr" in out else None


# -- answering ----------------------------------------------------------------------------


def test_client_resolves_owned_ips_to_the_node_mac(lab, net):
    r = net.responder(answer=[net.ip4, net.ip6])
    assert set(r.ready["owned"]) == {net.ip4, net.ip6} and r.ready["mac"] == net.node.mac
    res = lab.run(net.client.netns, ["arping", "-c", "2", "-w", "10", "-I", "eth0", net.ip4], check=False)
    assert f"[{net.node.mac.upper()}]" in res.stdout.upper(), res.stdout + res.stderr
    # The kernel's own resolution: ping fails (node1's kernel does not hold the IP) but resolves it first.
    lab.run(net.client.netns, ["ping", "-c", "1", "-W", "1", net.ip4], check=False)
    wait_for(lambda: neigh_mac(lab, net.ip4) == net.node.mac, what="IPv4 neighbour entry")
    lab.run(net.client.netns, ["ping", "-6", "-c", "1", "-W", "1", net.ip6], check=False)
    wait_for(lambda: neigh_mac(lab, net.ip6) == net.node.mac, what="IPv6 neighbour entry")


def test_arp_reply_fields(lab, net):
    net.responder(answer=[net.ip4])
    report = capture(lab, net.node.mac, [net.who_has(net.ip4)])
    (reply,) = arp_replies(report)
    assert reply.dst == net.client.mac and reply.src == net.node.mac
    a = reply[ARP]
    assert (a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst) == (2, net.node.mac, net.ip4, net.client.mac, net.client.ip4)


def node_groups(lab) -> str:
    return lab.run(lab.nodes[0].netns, ["ip", "-6", "maddr", "show", "dev", "eth0"]).stdout


def test_neighbor_advertisement_fields_for_solicitations_probes_and_nud(lab, net):
    net.responder(answer=[net.ip6])
    # Joined through the IPv6 stack (so MLD-snooping switches learn it), not only as a MAC filter.
    assert "ff02::1:ff00:40" in node_groups(lab)
    # Solicited via the solicited-node group: the responder joined it, or the frame would not be ours.
    (na,) = adverts(capture(lab, net.node.mac, [net.solicit(net.ip6)]))
    assert na.dst == net.client.mac and na[IPv6].src == net.ip6 and na[IPv6].dst == net.client_ip6
    assert na[IPv6].hlim == 255 and checksum_ok(na)
    assert (na[ICMPv6ND_NA].tgt, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O, na[ICMPv6ND_NA].R) == (net.ip6, 1, 1, 0)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == net.node.mac
    # Duplicate address detection from :: is answered to all nodes, without the solicited flag.
    (na,) = adverts(capture(lab, net.node.mac, [net.solicit(net.ip6, src="::", lladdr=False)]))
    assert na.dst == "33:33:00:00:00:01" and na[IPv6].dst == "ff02::1"
    assert (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (0, 1) and checksum_ok(na)
    # Unicast reachability probe to our MAC without a source link-layer option: back to the frame's source.
    (na,) = adverts(capture(lab, net.node.mac, [net.solicit(net.ip6, dst_mac=net.node.mac, dst=net.ip6,
                                                            lladdr=False)]))
    assert na.dst == net.client.mac and na[ICMPv6ND_NA].S == 1


def test_requests_for_ips_not_owned_get_no_answer(lab, net):
    r = net.responder(answer=[net.ip4, net.ip6])
    other = lab.nodes[1]
    frames = [net.who_has(net.ip4_free), net.who_has(other.ip4),
              net.solicit(net.ip6_free), net.solicit(canon(other.ip6)),
              # Ours, but addressed to another MAC (seen here because the switch floods unknown unicast)
              # and tagged for a VLAN node1 has no device for: the kernel's ARP ignores both, so do we.
              net.who_has(net.ip4, dst=FAKE_MAC),
              Ether(src=net.client.mac, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=7)
              / ARP(op=1, hwsrc=net.client.mac, psrc=net.client.ip4, pdst=net.ip4),
              net.solicit(net.ip6, dst_mac=FAKE_MAC)]
    report = capture(lab, net.node.mac, frames, listen=2)
    assert arp_replies(report) == [] and adverts(report) == []
    assert r.counters()["ipv4"]["requests"] == 0 and r.counters()["ipv6"]["requests"] == 0
    # ...while the same client is answered for what node1 owns.
    assert len(arp_replies(capture(lab, net.node.mac, [net.who_has(net.ip4)]))) == 1


# -- announcing ---------------------------------------------------------------------------


def test_gaining_ips_announces_them_and_updates_existing_neighbour_entries(lab, net):
    r = net.responder(count=3, interval=0.2)
    for ip in (net.ip4, net.ip6):
        lab.run(net.client.netns, ["ip", "neigh", "replace", ip, "lladdr", FAKE_MAC, "dev", "eth0", "nud", "stale"])
        assert neigh_mac(lab, ip) == FAKE_MAC
    cap = Capture(lab, net.node.mac, listen=3)
    r.set(answer=[net.ip4, net.ip6])
    report = cap.result()
    garp = [f for _, f in report["frames"] if ARP in f]
    assert sorted(f[ARP].op for f in garp) == [1, 1, 1, 2, 2, 2]  # the burst is bounded: 3 rounds
    for f in garp:
        assert f.dst == "ff:ff:ff:ff:ff:ff" and f[ARP].psrc == f[ARP].pdst == net.ip4 and f[ARP].hwsrc == net.node.mac
    nas = adverts(report)
    assert len(nas) == 3
    for na in nas:
        assert na.dst == "33:33:00:00:00:01" and na[IPv6].dst == "ff02::1" and na[IPv6].src == net.ip6
        assert (na[ICMPv6ND_NA].tgt, na[ICMPv6ND_NA].O, na[ICMPv6ND_NA].S) == (net.ip6, 1, 0)
        assert na[ICMPv6NDOptDstLLAddr].lladdr == net.node.mac and checksum_ok(na)
    # The client's kernel took the announcements: its entries now point at node1.
    wait_for(lambda: neigh_mac(lab, net.ip4) == net.node.mac, what="IPv4 entry updated by gratuitous ARP")
    wait_for(lambda: neigh_mac(lab, net.ip6) == net.node.mac, what="IPv6 entry updated by unsolicited NA")
    # announce() re-sends a burst for what is owned, and only that.
    cap = Capture(lab, net.node.mac, listen=2)
    r.cmd({"announce": [net.ip4, net.ip4_free]})
    again = [f for _, f in cap.result()["frames"] if ARP in f]
    assert len(again) == 6 and {f[ARP].psrc for f in again} == {net.ip4}


def test_first_announcement_is_sent_before_set_ips_returns(lab, net):
    r = net.responder(count=1)
    cap = Capture(lab, net.node.mac, listen=1)
    res = r.set(answer=[net.ip4])
    frames = [(ts, f) for ts, f in cap.result()["frames"] if ARP in f]
    assert len(frames) == 2
    # Both clocks are the same host's CLOCK_REALTIME: the client's kernel received the frames
    # before the responder process read the clock after set_ips returned.
    assert all(ts <= res["returned"] for ts, _ in frames), (frames, res)


def test_announce_only_ips_are_announced_but_not_answered(lab, net):
    r = net.responder(count=3)
    cap = Capture(lab, net.node.mac, listen=2)
    r.set(answer=[], announce_only=[net.ip4b])
    assert len([f for _, f in cap.result()["frames"] if ARP in f]) == 6
    report = capture(lab, net.node.mac, [net.who_has(net.ip4b)])
    assert arp_replies(report) == []


# -- losing -------------------------------------------------------------------------------


def test_a_removed_ip_is_never_answered_again(lab, net):
    r = net.responder(answer=[net.ip4, net.ip6])
    assert len(arp_replies(capture(lab, net.node.mac, [net.who_has(net.ip4)]))) == 1
    # A steady stream of requests for both IPs while they are removed (2,000/s, bounded).
    stream = Capture(lab, net.node.mac, [net.who_has(net.ip4), net.solicit(net.ip6)], count=8000, rate=2000,
                     listen=1)
    time.sleep(1.5)
    res = r.set(answer=[])
    report = stream.result()
    wait_for(lambda: "ff02::1:ff00:40" not in node_groups(lab), what="leaving the solicited-node group")
    answers = [(ts, f) for ts, f in report["frames"] if (ARP in f and f[ARP].op == 2) or ICMPv6ND_NA in f]
    assert any(ts < res["started"] for ts, _ in answers), "the stream was not being answered before"
    assert report["send_end"] > res["returned"] + 1, "the stream did not outlast the removal"
    late = [ts - res["returned"] for ts, _ in answers if ts > res["returned"]]
    # A reply sent just before set_ips returned may arrive a moment later; none may arrive later
    # still (the responder would have kept answering). The allowance is generous, not a latency test.
    assert not [d for d in late if d > 0.25], late
    # Gained back: answered again.
    r.set(answer=[net.ip4])
    assert len(arp_replies(capture(lab, net.node.mac, [net.who_has(net.ip4)]))) == 1
    assert adverts(capture(lab, net.node.mac, [net.solicit(net.ip6)])) == []


# -- hostile input ------------------------------------------------------------------------


def _malformed(net) -> tuple[list[Ether], tuple[int, int], tuple[int, int]]:
    """Bad frames about our IPs, to node1's MAC; and how many of them (ARP, ND) pass the kernel
    filter and so must be counted as malformed in user space, plus how many more may be (the
    switch may drop them first: a bridge drops a multicast source MAC, br_netfilter an IPv6
    packet shorter than its payload length)."""
    eth = Ether(src=net.client.mac, dst=net.node.mac)
    c = net.client
    arp_user = [  # pass the filter (right header, our IP), rejected in user space
        eth / ARP(op=7, hwsrc=c.mac, psrc=c.ip4, pdst=net.ip4),
        eth / ARP(op=1, hwsrc="01:00:5e:00:00:01", psrc=c.ip4, pdst=net.ip4),
        eth / ARP(op=1, hwsrc="00:00:00:00:00:00", psrc=c.ip4, pdst=net.ip4),
        eth / ARP(op=1, hwsrc=c.mac, psrc="224.0.0.5", pdst=net.ip4),
    ]
    arp_maybe = [Ether(src="ff:ff:ff:ff:ff:ff", dst=net.node.mac) / ARP(op=1, hwsrc=c.mac, psrc=c.ip4, pdst=net.ip4)]
    arp_kernel = [  # dropped by the filter already
        Raw(bytes(eth / ARP(op=1, hwsrc=c.mac, psrc=c.ip4, pdst=net.ip4))[:41]),
        eth / ARP(hwtype=6, op=1, hwsrc=c.mac, psrc=c.ip4, pdst=net.ip4),
        eth / ARP(plen=16, op=1, hwsrc=c.mac, psrc=c.ip4, pdst=net.ip4),
        Raw(bytes(eth)[:12] + b"\x08\x06"),
    ]
    good_ns = eth / IPv6(src=net.client_ip6, dst=net.ip6, hlim=255) / ICMPv6ND_NS(tgt=net.ip6) / ICMPv6NDOptSrcLLAddr(
        lladdr=c.mac)
    bad_sum = bytearray(bytes(good_ns))
    bad_sum[56] ^= 0xFF
    nd_user = [
        Raw(bytes(bad_sum)),
        eth / IPv6(src=net.client_ip6, dst=net.ip6, hlim=255) / ICMPv6ND_NS(tgt=net.ip6, code=3),
        eth / IPv6(src=net.client_ip6, dst=net.ip6, hlim=255) / ICMPv6ND_NS(tgt=net.ip6)
        / Raw(b"\x01\x00" + b"\x00" * 6),  # an option of length 0
        eth / IPv6(src="::", dst="ff02::1:ff00:40", hlim=255) / ICMPv6ND_NS(tgt=net.ip6) / ICMPv6NDOptSrcLLAddr(
            lladdr=c.mac),
        eth / IPv6(src="ff02::2", dst=net.ip6, hlim=255) / ICMPv6ND_NS(tgt=net.ip6),
    ]
    nd_maybe = [Raw(bytes(good_ns)[:78])]  # payload length says 32, 24 are there
    nd_kernel = [
        eth / IPv6(src=net.client_ip6, dst=net.ip6, hlim=64) / ICMPv6ND_NS(tgt=net.ip6),
        Raw(bytes(good_ns)[:70]),
        eth / IPv6(src=net.client_ip6, dst=net.ip6, hlim=255, nh=0) / Raw(bytes(ICMPv6ND_NS(tgt=net.ip6))),
    ]
    frames = arp_user + arp_maybe + arp_kernel + nd_user + nd_maybe + nd_kernel
    return frames, (len(arp_user), len(arp_maybe)), (len(nd_user), len(nd_maybe))


def test_malformed_frames_are_counted_and_never_answered(lab, net):
    r = net.responder(answer=[net.ip4, net.ip6])
    frames, (n4, maybe4), (n6, maybe6) = _malformed(net)
    report = capture(lab, net.node.mac, frames, listen=2)
    assert arp_replies(report) == [] and adverts(report) == []

    def counted():
        c = r.counters()
        return c if c["ipv4"]["malformed"] >= n4 and c["ipv6"]["malformed"] >= n6 else None

    c = wait_for(counted, what="malformed counters")
    assert n4 <= c["ipv4"]["malformed"] <= n4 + maybe4 and n6 <= c["ipv6"]["malformed"] <= n6 + maybe6, c
    assert c["ipv4"]["replies"] == c["ipv6"]["replies"] == 0
    assert c["ipv4"]["errors"] == c["ipv6"]["errors"] == 0
    assert r.alive


def test_a_flood_of_garbage_and_requests_neither_crashes_nor_misleads(lab, net):
    r = net.responder(answer=[net.ip4, net.ip6])
    rng = random.Random(4)
    malformed, _, _ = _malformed(net)
    templates = [bytes(net.who_has(net.ip4)), bytes(net.solicit(net.ip6))]
    frames = [bytes(f) for f in malformed]
    for _ in range(400):  # mutated requests: some still valid, most not
        f = bytearray(rng.choice(templates))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(14, len(f))
            f[i] = rng.randrange(256)
        frames.append(bytes(f))
    for _ in range(200):  # random bytes behind an ARP or IPv6 header
        head = bytes(Ether(src=net.client.mac, dst=rng.choice([net.node.mac, "ff:ff:ff:ff:ff:ff"]),
                           type=rng.choice([0x0806, 0x86DD])))
        frames.append(head + rng.randbytes(rng.randint(0, 100)))
    frames += [bytes(net.who_has(net.ip4_free)), bytes(net.solicit(net.ip6_free))] * 50
    frames += [bytes(net.who_has(net.ip4)), bytes(net.solicit(net.ip6))] * 25  # to be answered amid the rest
    rng.shuffle(frames)
    report = capture(lab, net.node.mac, [Raw(f) for f in frames], count=20_000, max_seconds=30, listen=2)
    assert report["sent"] == 20_000
    assert r.alive
    # Whatever was answered was answered rightly: only our IPs, only with our MAC. (node1's kernel
    # answers for its own addresses when a mutation happens to ask for one.)
    kernel = {net.node.ip4, canon(net.node.ip6)}
    for _, f in report["frames"]:
        if ARP in f and f[ARP].psrc not in kernel:
            assert f[ARP].op == 2 and f[ARP].psrc == net.ip4 and f[ARP].hwsrc == net.node.mac, f.summary()
        elif ICMPv6ND_NA in f and f[ICMPv6ND_NA].tgt not in kernel and not f[ICMPv6ND_NA].tgt.startswith("fe80:"):
            assert f[ICMPv6ND_NA].tgt == net.ip6 and f[ICMPv6NDOptDstLLAddr].lladdr == net.node.mac, f.summary()
            assert checksum_ok(f)
    c = r.counters()
    assert c["ipv4"]["malformed"] > 0 and c["ipv6"]["malformed"] > 0
    assert c["ipv4"]["replies"] > 0 and c["ipv6"]["replies"] > 0
    assert c["ipv4"]["errors"] == c["ipv6"]["errors"] == 0
    # ...and it still answers correctly afterwards.
    (reply,) = arp_replies(capture(lab, net.node.mac, [net.who_has(net.ip4)]))
    assert reply[ARP].psrc == net.ip4 and reply[ARP].pdst == net.client.ip4
    (na,) = adverts(capture(lab, net.node.mac, [net.solicit(net.ip6)]))
    assert na[ICMPv6ND_NA].tgt == net.ip6 and na[ICMPv6ND_NA].S == 1


# -- conflicts ----------------------------------------------------------------------------


def test_another_host_claiming_an_ip_is_reported_and_not_answered(lab, net):
    r = net.responder(answer=[net.ip4, net.ip6])
    claim4 = Ether(src=FAKE_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=FAKE_MAC, psrc=net.ip4, pdst=net.ip4,
                                                                 hwdst="00:00:00:00:00:00")
    claim6 = (Ether(src=FAKE_MAC, dst="33:33:00:00:00:01") / IPv6(src=net.ip6, dst="ff02::1", hlim=255)
              / ICMPv6ND_NA(tgt=net.ip6, O=1, S=0, R=0) / ICMPv6NDOptDstLLAddr(lladdr=FAKE_MAC))
    report = capture(lab, net.node.mac, [claim4, claim6], listen=1)
    assert arp_replies(report) == [] and adverts(report) == []  # a claim is not a question
    wait_for(lambda: {(net.ip4, FAKE_MAC), (net.ip6, FAKE_MAC)} <= set(r.conflicts), what="conflict reports")
    c = r.counters()
    assert c["ipv4"]["conflicts"] == 1 and c["ipv6"]["conflicts"] == 1


# -- the API, in process ------------------------------------------------------------------

API = r"""
import sys, time
from leifur.agent.responder import Responder
ip4, ip6 = sys.argv[1:3]
for bad in ("nosuchif0", "lo"):
    try:
        Responder(bad).start()
    except OSError as e:
        print("start", bad, "OSError", e.errno)
r = Responder("eth0", gratuitous_count=2, gratuitous_interval=0.05)
r.set_ips([ip4], [ip6])  # before start: remembered, applied by start
print("owned before start", sorted(r.owned))
r.start()
r.start()  # idempotent
print("owned", sorted(r.owned))
for bad in (["224.0.0.1"], ["not-an-ip"], ["::"], ["127.0.0.1"]):
    try:
        r.set_ips(bad)
    except ValueError:
        print("rejected", bad[0])
print("owned after rejections", sorted(r.owned))
r.set_ips([ip4, ip6])  # moved from announce-only to answer: owned either way
r.announce(["192.0.2.1"])  # not owned: ignored
r.announce()
print("owned", sorted(r.owned))
r.close()
r.close()
try:
    r.set_ips([ip4])
except RuntimeError:
    print("closed")
"""


def test_api_contract_in_process(lab, net):
    res = lab.run(net.node.netns, [sys.executable, "-c", API, net.ip4, net.ip6], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("start nosuchif0 OSError")
    assert lines[1] == f"start lo OSError {errno.EOPNOTSUPP}"  # not Ethernet
    both = str(sorted([net.ip4, net.ip6]))
    assert f"owned before start {both}" in lines and f"owned {both}" in lines
    assert [line for line in lines if line.startswith("rejected")] == [
        "rejected 224.0.0.1", "rejected not-an-ip", "rejected ::", "rejected 127.0.0.1"]
    assert f"owned after rejections {both}" in lines
    assert lines[-1] == "closed"
