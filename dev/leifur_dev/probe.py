"""Client-side probes for tests, the demo and benchmarks: who answers ARP / NDP for an IP, over time.

Run inside the client namespace: `python -m leifur_dev.probe --interface eth0 --ip IP
--interval 0.01 --duration 5`. It sends one ARP request (IPv4) or Neighbor Solicitation
(IPv6) per interval and IP (`--ip` takes several, comma-separated), bounded by `duration`,
records every answer with its MAC and the kernel's
receive time, and prints one JSON object at the end (or when it gets SIGTERM/SIGINT). Before
that, the first answer is reported at once on a line of its own, `{"first": MAC}`, so that a
caller can wait until the probe sees who answers now instead of guessing how long it takes to
start (`Stack.probe_first_answer`).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import itertools
import json
import select
import socket
import statistics
import struct
import sys
import time
from dataclasses import dataclass

from leifur.agent import arp, bpf, ndp
from leifur_dev import runtime


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _own_mac(ifname: str) -> str:
    with open(f"/sys/class/net/{ifname}/address") as f:
        return f.read().strip()


def _own_address(ifname: str, version: int) -> str:
    import subprocess

    out = subprocess.run(["ip", "-o", f"-{version}", "addr", "show", "dev", ifname, "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[3].split("/")[0]


@dataclass
class Answer:
    t: float  # seconds since the probe started, by the kernel's receive timestamp
    mac: str


# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS) and SO_RCVBUFFORCE; the socket module names neither.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = 33


def _receive_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's CLOCK_REALTIME stamp of a frame: when it arrived, however late we got to it."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec / 1e9
    return time.time()


def _parse_answer(frame: bytes, target: bytes, version: int) -> str | None:
    """The answering MAC if `frame` answers for `target`, else None."""
    if version == 4:
        if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[20:22] != b"\x00\x02":
            return None
        return _mac_str(frame[22:28]) if frame[28:32] == target else None
    if len(frame) < 78 or frame[12:14] != b"\x86\xdd" or frame[20] != 58 or frame[54] != 136:
        return None
    if frame[62:78] != target:
        return None
    # Prefer the target link-layer address option; fall back to the Ethernet source.
    opts = frame[78:]
    while len(opts) >= 8 and opts[1]:
        if opts[0] == 2:
            return _mac_str(opts[2:8])
        opts = opts[opts[1] * 8:]
    return _mac_str(frame[6:12])


def probe(ifname: str, ip: str, interval: float, duration: float) -> dict:
    """Probe one IP; its summary (see `summarize`) and when the probe started (wall clock)."""
    result = probe_many(ifname, [ip], interval, duration)
    return {**result["ips"][ip], "start": result["start"]}


def probe_many(ifname: str, ips: list[str], interval: float, duration: float) -> dict:
    """Probe every IP (one family) each interval: {"ips": {ip: summary}, "start": wall clock}.
    `{"first": MAC}` is printed once every IP has answered (the first answer, with one IP)."""
    addrs = [ipaddress.ip_address(ip) for ip in ips]
    version = addrs[0].version
    if any(a.version != version for a in addrs):
        raise ValueError("probe one family at a time")
    mac = _mac_bytes(_own_mac(ifname))
    src_ip = _own_address(ifname, version)
    # The agent's own frame builders: one implementation of the wire format.
    build = arp.build_request if version == 4 else ndp.build_solicit
    frames = [build(mac, src_ip, str(a)) for a in addrs]
    proto = bpf.ETH_P_ARP if version == 4 else bpf.ETH_P_IPV6
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    # Hundreds of IPs answer in one burst while we are still sending: the default buffer holds
    # about 200 small frames, and the kernel would drop the rest (answers seen as missing).
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.bind((ifname, proto))
    sock.setblocking(False)
    stop = runtime.stop_on_signals()
    start = time.monotonic()
    start_wall = time.time()
    sent: list[float] = []
    answers: dict[bytes, list[Answer]] = {a.packed: [] for a in addrs}
    unanswered = set(answers)

    def receive() -> None:
        """Everything queued on the socket, stamped with when the kernel received it."""
        while True:
            try:
                data, ancillary, _flags, _addr = sock.recvmsg(2048, 64)
            except BlockingIOError:
                return
            target = _target(data, version)
            who = _parse_answer(data, target, version) if target in answers else None
            if who is None:
                continue
            answers[target].append(Answer(_receive_time(ancillary) - start_wall, who))
            if unanswered:
                unanswered.discard(target)
                if not unanswered:
                    print(json.dumps({"first": who}), flush=True)

    next_send = start
    deadline = start + duration
    while not stop.is_set():
        now = time.monotonic()
        if now >= deadline:
            break
        if now >= next_send:
            for frame in frames:
                sock.send(frame)
            sent.append(now - start)
            next_send += interval
            if next_send < now:
                next_send = now + interval
        ready, _, _ = select.select([sock], [], [], max(0.0, min(next_send, deadline) - time.monotonic()))
        if ready:
            receive()
    # Answers that arrived while we were not running are in the socket, with their kernel times:
    # a probe descheduled past its deadline must not report them as missing.
    receive()
    sock.close()
    return {"ips": {str(a): summarize(sent, answers[a.packed]) for a in addrs}, "start": start_wall}


def _target(frame: bytes, version: int) -> bytes:
    """The IP an ARP reply or Neighbor Advertisement is about (garbage for other frames)."""
    return frame[28:32] if version == 4 else frame[62:78]


def summarize(sent: list[float], answers: list[Answer]) -> dict:
    """Gaps between answers (the blackout is the longest), MAC changes, and moments two MACs answered."""
    times = [a.t for a in answers]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    longest = max(gaps, default=None)
    at = times[gaps.index(longest)] if longest is not None else None
    changes = [{"t": b.t, "from": a.mac, "to": b.mac} for a, b in itertools.pairwise(answers)
               if a.mac != b.mac]
    return {
        "sent": len(sent), "answered": len(answers),
        "macs": sorted({a.mac for a in answers}),
        "first_mac": answers[0].mac if answers else None, "last_mac": answers[-1].mac if answers else None,
        "longest_gap": longest, "longest_gap_at": at, "median_gap": statistics.median(gaps) if gaps else None,
        "changes": changes,
        "answers": [[round(a.t, 6), a.mac] for a in answers],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--interface", default="eth0")
    p.add_argument("--ip", required=True, help="an IP, or several of one family, comma-separated")
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--duration", type=float, default=10.0)
    args = p.parse_args(argv)
    ips = args.ip.split(",")
    # Bounded: at most 1,000 frames per interval, an interval of 1 ms or more, at most 600 s.
    if args.interval < 0.001 or args.duration > 600 or len(ips) > 1000:
        p.error("interval must be >= 1 ms, duration <= 600 s and at most 1000 IPs: every sending loop is bounded")
    result = (probe(args.interface, ips[0], args.interval, args.duration) if len(ips) == 1
              else probe_many(args.interface, ips, args.interval, args.duration))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def claims_in_capture(path: str, ip: str) -> list[tuple[float, str]]:
    """(time, MAC) of every frame in a pcap that claims `ip`: ARP replies and gratuitous ARP
    from it (IPv4), Neighbor Advertisements for it (IPv6). scapy is fine here: offline analysis."""
    from scapy.all import ARP, Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, rdpcap

    out = []
    for pkt in rdpcap(path):
        if ARP in pkt and pkt[ARP].psrc == ip and (pkt[ARP].op == 2 or pkt[ARP].pdst == ip):
            out.append((float(pkt.time), pkt[ARP].hwsrc))
        elif ICMPv6ND_NA in pkt and ipaddress.ip_address(pkt[ICMPv6ND_NA].tgt) == ipaddress.ip_address(ip):
            mac = pkt[ICMPv6NDOptDstLLAddr].lladdr if ICMPv6NDOptDstLLAddr in pkt else pkt[Ether].src
            out.append((float(pkt.time), mac))
    return sorted(out)


def handover_windows(claims: list[tuple[float, str]], window: float) -> list[tuple[float, float, set[str]]]:
    """Group the moments the claiming MAC changed into windows: changes less than `window` apart
    belong to one handover. Each window: (first change, last change, MACs seen in it)."""
    windows: list[tuple[float, float, set[str]]] = []
    for (_t0, a), (t1, b) in itertools.pairwise(claims):
        if a == b:
            continue
        if windows and t1 - windows[-1][1] <= window:
            start, _, macs = windows[-1]
            windows[-1] = (start, t1, macs | {a, b})
        else:
            windows.append((t1, t1, {a, b}))
    return windows
