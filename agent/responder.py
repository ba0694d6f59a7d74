"""The layer-2 responder of one interface: answers ARP requests and Neighbor Solicitations for
the IPs this node owns, with the interface's MAC, and announces IPs it gains.

One thread per interface waits in select() on two AF_PACKET sockets (ARP and IPv6), each
with a classic BPF filter that lets through only frames about our IPs, and on a wake-up pipe
for timers and shutdown. Frames are parsed by arp.py / ndp.py; nothing here dissects
packets with scapy.

Run as a program for manual tests (the netns tests drive it so):
    python -m leifur.agent.responder --interface eth0 --ip 192.0.2.40 --ip 2001:db8::40
and then JSON lines on stdin: {"set": {"answer": [...], "announce_only": [...]}},
{"announce": null}, {"counters": true}; one JSON line answers each.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import ipaddress
import itertools
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import Counter

from leifur.kube.logfields import Value, fields
from leifur.kube.metrics import family

from . import arp, bpf, metrics, ndp
from .arp import MalformedFrame

log = logging.getLogger(__name__)

SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER = 1
SO_RCVBUFFORCE = 33
_RCVBUF = 4 << 20  # absorbs a burst of requests while the thread is busy
_BATCH = 256  # frames per socket per loop turn, so timers are never starved by a flood
_MAX_GRATUITOUS = 100
_CONFLICT_CALLBACK_INTERVAL = 1.0  # per (IP, MAC)


def interface_mac(ifname: str) -> bytes:
    """The interface's current MAC; OSError if it does not exist or is not Ethernet."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        res = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("256s", ifname.encode()[:15]))
    family = struct.unpack_from("H", res, 16)[0]
    if family != ARPHRD_ETHER:
        raise OSError(errno.EOPNOTSUPP, f"{ifname} is not an Ethernet interface (hardware type {family})")
    return res[18:24]


def _mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _normalize(ips: Iterable[str]) -> set[str]:
    out = set()
    for raw in ips:
        ip = ipaddress.ip_address(str(raw).strip())
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
            raise ValueError(f"{ip} cannot be answered for on a LAN")
        out.add(str(ip))
    return out


def _split(ips: Iterable[str]) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """Packed IPv4 and packed IPv6 addresses."""
    packed = [ipaddress.ip_address(ip).packed for ip in ips]
    return frozenset(p for p in packed if len(p) == 4), frozenset(p for p in packed if len(p) == 16)


class _RateLimitedLog:
    """Logs the first of a kind with its traceback, then at most once per `interval`, with a count."""

    def __init__(self, extra: dict[str, Value], interval: float = 10.0) -> None:
        self.extra = extra
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def exception(self, key: str, msg: str, *args: object) -> None:
        self._log(key, logging.ERROR, True, msg, *args)

    def warning(self, key: str, msg: str, *args: object) -> None:
        self._log(key, logging.WARNING, False, msg, *args)

    def _log(self, key: str, level: int, exc_info: bool, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        log.log(level, msg + (f" ({n} more since the last report)" if n else ""), *args, exc_info=exc_info,
                extra=self.extra)


class Responder:
    """Answers ARP and NDP for a set of IPs on one interface; see the module docstring."""

    def __init__(self, ifname: str, *, gratuitous_count: int = 3, gratuitous_interval: float = 0.2,
                 on_conflict: Callable[[str, str], None] | None = None) -> None:
        if not 0 <= gratuitous_count <= _MAX_GRATUITOUS:
            raise ValueError(f"gratuitous_count must be 0..{_MAX_GRATUITOUS}")
        if gratuitous_interval < 0:
            raise ValueError("gratuitous_interval must not be negative")
        self.ifname = ifname
        self.mac = b""
        self._count = gratuitous_count
        self._interval = gratuitous_interval
        self._on_conflict = on_conflict
        self._m4 = metrics.for_interface(family(4), ifname)
        self._m6 = metrics.for_interface(family(6), ifname)
        self._err4 = metrics.PACKET_ERRORS.labels(family(4), ifname)
        self._err6 = metrics.PACKET_ERRORS.labels(family(6), ifname)
        # _lock guards what the packet path reads (the answer sets) and the timer heap; it is held
        # from the last ownership check to the send, so nothing is sent for an IP once set_ips has
        # swapped it out. _config serializes set_ips/announce/start/close.
        self._lock = threading.Lock()
        self._config = threading.RLock()
        self._answer: frozenset[str] = frozenset()
        self._announce_only: frozenset[str] = frozenset()
        self._answer4: frozenset[bytes] = frozenset()
        self._answer6: frozenset[bytes] = frozenset()
        self._owned4: frozenset[bytes] = frozenset()
        self._owned6: frozenset[bytes] = frozenset()
        self._timers: list[tuple[float, int, str, int, int]] = []  # (due, seq, ip, generation, rounds left)
        self._generation: dict[str, int] = {}
        self._seq = itertools.count()
        self._groups: set[bytes] = set()  # solicited-node groups joined
        self._conflict_seen: dict[tuple[str, bytes], float] = {}
        self._fields = fields(interface=ifname)
        self._errors = _RateLimitedLog(self._fields)
        self._arp_sock: socket.socket | None = None
        self._nd_sock: socket.socket | None = None
        self._mc_sock: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._ifindex = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._pending: tuple[set[str], set[str]] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Open the sockets and start the thread; applies a set_ips made before. OSError if the
        interface does not exist or is not Ethernet."""
        with self._config:
            if self._closed:
                raise RuntimeError("responder is closed")
            if self._thread is not None:
                return
            try:
                self._open()
            except BaseException:
                self._close_fds()
                raise
            self._thread = threading.Thread(target=self._run, name=f"responder-{self.ifname}", daemon=True)
            self._thread.start()
            if self._pending is not None:
                answer, only = self._pending
                self._pending = None
                self._apply(answer, only)

    def _open(self) -> None:
        self._ifindex = socket.if_nametoindex(self.ifname)
        self.mac = interface_mac(self.ifname)
        self._arp_sock = self._packet_socket(bpf.ETH_P_ARP, bpf.drop_all())
        self._nd_sock = self._packet_socket(bpf.ETH_P_IPV6, bpf.drop_all())
        # The solicited-node groups are joined through an IPv6 socket rather than with
        # PACKET_ADD_MEMBERSHIP: both make the NIC accept the group's MAC, but only the IPv6
        # join makes the kernel send MLD reports, without which an MLD-snooping switch never
        # forwards the solicitations to this port.
        try:
            self._mc_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError as e:
            log.warning("no IPv6 on this host (%s): cannot join solicited-node groups on %s", e, self.ifname,
                        extra=self._fields)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def _packet_socket(self, ethertype: int, program: list[bpf.Instruction]) -> socket.socket:
        # Protocol 0 receives nothing until bind(): the filter is in place before the first frame.
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            bpf.attach(s, program)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _RCVBUF)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            s.bind((self.ifname, ethertype))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        return s

    def alive(self) -> bool:
        """The responder thread runs (False before start() and after close())."""
        thread = getattr(self, "_thread", None)
        return thread is not None and thread.is_alive()

    def close(self) -> None:
        """Stop answering, stop the thread, close the sockets, leave the groups. Idempotent."""
        with self._config:
            if self._closed:
                return
            self._closed = True
            with self._lock:
                self._answer4 = self._answer6 = self._owned4 = self._owned6 = frozenset()
                self._timers.clear()
            self._stop.set()
            self._wake()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=10)
            for group in self._groups:
                self._membership(socket.IPV6_LEAVE_GROUP, group)
            self._groups.clear()
            self._close_fds()

    def _close_fds(self) -> None:
        for s in (self._arp_sock, self._nd_sock, self._mc_sock):
            if s is not None:
                s.close()
        self._arp_sock = self._nd_sock = self._mc_sock = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> Responder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ownership ----------------------------------------------------------------------

    @property
    def owned(self) -> frozenset[str]:
        """Every IP this responder announces: answered ones and announce-only ones."""
        with self._config:
            if self._pending is not None:
                return frozenset(self._pending[0] | self._pending[1])
            return self._answer | self._announce_only

    def set_ips(self, answer: Iterable[str], announce_only: Iterable[str] = ()) -> None:
        """Make these the IPs of this interface (both families mixed).

        `answer`: answer ARP/NS for them. `announce_only`: only announce them (the kernel answers).
        An IP new in either set gets a gratuitous burst, the first round before this returns. An IP
        gone from `answer` is never answered again once this returns. An IP in both sets is
        answered. ValueError (and nothing changed) for an IP that cannot be owned on a LAN.
        """
        ans = _normalize(answer)
        only = _normalize(announce_only) - ans
        with self._config:
            if self._closed:
                raise RuntimeError("responder is closed")
            if self._thread is None:
                self._pending = (ans, only)
                return
            self._apply(ans, only)

    def _apply(self, ans: set[str], only: set[str]) -> None:
        a4, a6 = _split(ans)
        o4, o6 = _split(ans | only)
        groups = {ndp.solicited_node(ip) for ip in a6}
        # Join new groups first, so solicitations sent to them reach us as soon as we answer. A
        # join that failed is retried on the next call.
        for g in groups - self._groups:
            if self._membership(socket.IPV6_JOIN_GROUP, g):
                self._groups.add(g)
        if ans == self._answer and only == self._announce_only:
            return  # the caller re-asserts its state on every pass; nothing else to touch
        gained = (ans | only) - (self._answer | self._announce_only)
        with self._lock:
            self._answer4, self._answer6, self._owned4, self._owned6 = a4, a6, o4, o6
            for ip in (self._answer | self._announce_only) - (ans | only):
                self._generation.pop(ip, None)  # cancels its burst
        self._answer, self._announce_only = frozenset(ans), frozenset(only)
        # The filters follow the sets: a frame that passed the old filter is checked again in user space.
        arp_prog, nd_prog = bpf.arp_filter(a4, o4), bpf.nd_filter(a6, o6)
        if arp_prog == bpf.arp_any() or nd_prog == bpf.nd_any():
            self._errors.warning("catch-all", "too many IPs on %s for an exact kernel filter: user space now "
                                 "sees every ARP or ND frame", self.ifname)
        self._attach(self._arp_sock, arp_prog, bpf.arp_any)
        self._attach(self._nd_sock, nd_prog, bpf.nd_any)
        for g in self._groups - groups:
            self._membership(socket.IPV6_LEAVE_GROUP, g)
            self._groups.discard(g)
        self._burst(sorted(gained))

    def announce(self, ips: Iterable[str] | None = None, rounds: int | None = None) -> None:
        """Send a new gratuitous burst for `ips` (all owned IPs if None); IPs not owned are ignored.
        `rounds`: that many rounds instead of the configured count (1: a single announcement, as
        when defending an IP against a foreign claim)."""
        with self._config:
            if self._thread is None or self._closed:
                return
            owned = self._answer | self._announce_only
            wanted = owned if ips is None else _normalize(ips) & owned
            self._burst(sorted(wanted), rounds)

    def _attach(self, sock: socket.socket | None, program: list[bpf.Instruction],
                fallback: Callable[[], list[bpf.Instruction]]) -> None:
        if sock is None:
            return
        try:
            bpf.attach(sock, program)
        except OSError:
            log.exception("cannot attach the BPF filter on %s; falling back to the catch-all filter", self.ifname,
                          extra=self._fields)
            bpf.attach(sock, fallback())

    def _membership(self, option: int, group: bytes) -> bool:
        if self._mc_sock is None:
            return False
        try:
            self._mc_sock.setsockopt(socket.IPPROTO_IPV6, option, group + struct.pack("@I", self._ifindex))
        except OSError as e:
            what = "join" if option == socket.IPV6_JOIN_GROUP else "leave"
            self._errors.warning(f"{what}-{group.hex()}", "cannot %s %s on %s: %s", what,
                                 ipaddress.IPv6Address(group), self.ifname, e)
            return False
        return True

    # -- gratuitous bursts --------------------------------------------------------------

    def _burst(self, ips: list[str], rounds: int | None = None) -> None:
        """The first round now (before the caller returns), the rest from the thread."""
        count = self._count if rounds is None else min(max(rounds, 0), _MAX_GRATUITOUS)
        if not count or not ips:
            return
        due = time.monotonic() + self._interval
        with self._lock:
            for ip in ips:
                gen = next(self._seq)
                self._generation[ip] = gen
                if count > 1:
                    heapq.heappush(self._timers, (due, gen, ip, gen, count - 1))
        for ip in ips:
            self._announce_round(ip)
        self._wake()

    def _announce_round(self, ip: str) -> None:
        packed = ipaddress.ip_address(ip).packed
        v4 = len(packed) == 4
        m, err = (self._m4, self._err4) if v4 else (self._m6, self._err6)
        try:
            frames = arp.build_gratuitous(packed, self.mac) if v4 else (ndp.build_unsolicited_na(packed, self.mac),)
            sock = self._arp_sock if v4 else self._nd_sock
            with self._lock:
                if sock is None or packed not in (self._owned4 if v4 else self._owned6):
                    return
                for f in frames:
                    sock.send(f)
            m.gratuitous.inc(len(frames))
        except Exception:
            err.inc()
            self._errors.exception(f"announce-{ip}", "cannot announce %s on %s", ip, self.ifname)

    def _due_timers(self) -> float | None:
        """Run the rounds that are due; return seconds until the next one (None if none)."""
        while True:
            now = time.monotonic()
            with self._lock:
                if not self._timers:
                    return None
                due, _, ip, gen, left = self._timers[0]
                if due > now:
                    return due - now
                heapq.heappop(self._timers)
                if self._generation.get(ip) != gen:
                    continue
                if left > 1:
                    heapq.heappush(self._timers, (due + self._interval, next(self._seq), ip, gen, left - 1))
            self._announce_round(ip)

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError):  # a full pipe is awake enough
                os.write(self._wake_w, b"x")

    # -- the packet path ----------------------------------------------------------------

    def _run(self) -> None:
        arp_sock, nd_sock, wake = self._arp_sock, self._nd_sock, self._wake_r
        assert arp_sock is not None and nd_sock is not None
        readable: list[socket.socket | int] = [arp_sock, nd_sock, wake]
        while not self._stop.is_set():
            try:
                timeout = self._due_timers()
                ready, _, _ = select.select(readable, [], [], timeout)
                if self._stop.is_set():
                    break
                if wake in ready:
                    while os.read(wake, 4096) == 4096:
                        pass
                if arp_sock in ready:
                    self._drain(arp_sock, self._on_arp, self._err4)
                if nd_sock in ready:
                    self._drain(nd_sock, self._on_nd, self._err6)
            except BlockingIOError:
                pass
            except Exception:
                if self._stop.is_set():
                    break
                self._errors.exception("loop", "responder loop on %s", self.ifname)
                time.sleep(0.05)  # never spin on a persistent error

    def _drain(self, sock: socket.socket, handle: Callable[[bytes], None], err: Counter) -> None:
        for _ in range(_BATCH):
            try:
                frame = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # ENETDOWN and the like are reported once per event; the socket stays usable.
                err.inc()
                self._errors.exception(f"recv-{e.errno}", "receiving on %s", self.ifname)
                return
            try:
                handle(frame)
            except Exception:
                err.inc()
                self._errors.exception(handle.__name__, "handling a frame on %s", self.ifname)

    def _on_arp(self, frame: bytes) -> None:
        try:
            pkt = arp.parse(frame)
        except MalformedFrame:
            self._m4.malformed.inc()
            return
        mac = self.mac
        if pkt.sha == mac or pkt.eth_src == mac:
            return  # our own frame come back (a looping switch)
        if pkt.spa in self._owned4:
            self._conflict(self._m4, pkt.spa, pkt.sha)
            if pkt.is_gratuitous:
                return  # a claim, not a question
        if not pkt.is_request or pkt.tpa not in self._answer4:
            return
        self._m4.requests.inc()
        reply = arp.build_reply(pkt, mac)
        with self._lock:
            sock = self._arp_sock
            if sock is None or pkt.tpa not in self._answer4:
                return  # closed, or no longer ours, since the check above
            sock.send(reply)
        self._m4.replies.inc()

    def _on_nd(self, frame: bytes) -> None:
        try:
            pkt = ndp.parse(frame)
        except MalformedFrame:
            self._m6.malformed.inc()
            return
        mac = self.mac
        if pkt.eth_src == mac:
            return
        other = pkt.lladdr or pkt.eth_src
        # Another host advertising one of our IPs, or sending from one of them.
        claimed = pkt.target if not pkt.is_solicit and pkt.target in self._owned6 else pkt.src
        if claimed in self._owned6 and other != mac:
            self._conflict(self._m6, claimed, other)
        if not pkt.is_solicit:
            return
        if pkt.target not in self._answer6:
            return
        self._m6.requests.inc()
        reply = ndp.build_solicited_na(pkt, mac)
        with self._lock:
            sock = self._nd_sock
            if sock is None or pkt.target not in self._answer6:
                return  # closed, or no longer ours, since the check above
            sock.send(reply)
        self._m6.replies.inc()

    def _conflict(self, m: metrics.InterfaceCounters, packed_ip: bytes, other: bytes) -> None:
        m.conflicts.inc()
        if self._on_conflict is None:
            return
        ip = str(ipaddress.ip_address(packed_ip))
        now = time.monotonic()
        key = (ip, other)
        if now - self._conflict_seen.get(key, -1e9) < _CONFLICT_CALLBACK_INTERVAL:
            return
        if len(self._conflict_seen) > 4096:  # a flood of forged MACs must not grow this without bound
            self._conflict_seen.clear()
        self._conflict_seen[key] = now
        try:
            self._on_conflict(ip, _mac_str(other))
        except Exception:
            self._errors.exception("on_conflict", "conflict callback for %s on %s", ip, self.ifname)


# -- a program for manual tests ---------------------------------------------------------


def _counters(ifname: str) -> dict[str, dict[str, float]]:
    from prometheus_client import REGISTRY

    names = {"requests": "leifur_agent_requests_total", "replies": "leifur_agent_replies_total",
             "gratuitous": "leifur_agent_gratuitous_total", "malformed": "leifur_agent_malformed_frames_total",
             "conflicts": "leifur_agent_conflicts_total", "errors": "leifur_agent_packet_errors_total"}
    return {family: {k: REGISTRY.get_sample_value(n, {"family": family, "interface": ifname}) or 0.0
                     for k, n in names.items()} for family in ("ipv4", "ipv6")}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import signal
    import sys

    p = argparse.ArgumentParser(prog="python -m leifur.agent.responder",
                                description="Answer ARP/NDP for IPs on one interface.")
    p.add_argument("--interface", required=True)
    p.add_argument("--ip", action="append", default=[], help="an IP to answer for (repeatable)")
    p.add_argument("--announce-only", action="append", default=[], help="an IP only to announce (repeatable)")
    p.add_argument("--count", type=int, default=3, help="gratuitous rounds on gain")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between gratuitous rounds")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out_lock = threading.Lock()

    def emit(obj: object) -> None:
        with out_lock:
            print(json.dumps(obj), flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    r = Responder(args.interface, gratuitous_count=args.count, gratuitous_interval=args.interval,
                  on_conflict=lambda ip, mac: emit({"conflict": [ip, mac]}))
    with r:
        r.set_ips(args.ip, args.announce_only)
        emit({"ready": True, "mac": _mac_str(r.mac), "owned": sorted(r.owned)})
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                cmd = json.loads(line)
                if "set" in cmd:
                    # The wall-clock times bracket the call: a capture elsewhere on this host can
                    # compare its kernel timestamps with them.
                    t0 = time.time()
                    r.set_ips(cmd["set"].get("answer", []), cmd["set"].get("announce_only", []))
                    emit({"ok": "set", "owned": sorted(r.owned), "started": t0, "returned": time.time()})
                elif "announce" in cmd:
                    r.announce(cmd["announce"])
                    emit({"ok": "announce"})
                elif "counters" in cmd:
                    emit({"ok": "counters", "counters": _counters(args.interface)})
                else:
                    emit({"error": f"unknown command {line.strip()}"})
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                emit({"error": str(e)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
