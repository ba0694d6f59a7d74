"""Probing the LAN for a new IP before its first announcement (RFC 5227 for IPv4, duplicate
address detection for IPv6), the effects half: conflicts.py decides what the frames mean.

IPv4: `count` ARP probes (sender IP 0.0.0.0, sender MAC the interface's, target the IP),
`interval` apart, then listening until `wait` after the last. IPv6: as many DAD Neighbor
Solicitations (from ::, to the IP's solicited-node group). The first frame that shows a foreign
host using the IP ends the probe. Bounded: `count` frames and `(count - 1) * interval + wait`
seconds at most. RFC 5227's waits (1-2 s) are for hosts configuring themselves; a load balancer
announcing a Service's IP cannot wait that long, and a LAN answers in milliseconds.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import threading
import time
from collections.abc import Set
from dataclasses import dataclass

from . import arp, bpf, conflicts, ndp
from .arp import MalformedFrame
from .responder import _mac_str, interface_mac

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    ip: str
    interface: str
    in_use_by: str | None  # the foreign MAC that answered; None: nobody did

    @property
    def in_use(self) -> bool:
        return self.in_use_by is not None


def probe(ifname: str, ip: str, ours: Set[bytes], *, count: int, interval: float, wait: float,
          stop: threading.Event | None = None) -> ProbeResult:
    """Probe `ip` on `ifname`; frames from a MAC in `ours` (our nodes') do not count. OSError if
    the interface cannot be used (the caller treats that as not probed)."""
    if not 1 <= count <= 10 or interval < 0 or wait < 0:
        raise ValueError("probe count must be 1..10, interval and wait not negative")
    addr = ipaddress.ip_address(ip)
    v4 = addr.version == 4
    mac = interface_mac(ifname)
    ours = set(ours) | {mac}
    packed = addr.packed
    ethertype = bpf.ETH_P_ARP if v4 else bpf.ETH_P_IPV6
    frame = arp.build_request(mac, "0.0.0.0", packed) if v4 else ndp.build_solicit(mac, "::", packed)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        # Every ARP or ND frame for the short time of a probe; conflicts.py picks the ones about the IP.
        bpf.attach(sock, bpf.arp_any() if v4 else bpf.nd_any())
        sock.bind((ifname, ethertype))
        sock.setblocking(False)
        start = time.monotonic()
        sends = [start + i * interval for i in range(count)]
        deadline = sends[-1] + wait
        while True:
            now = time.monotonic()
            while sends and sends[0] <= now:
                sends.pop(0)
                sock.send(frame)
            if now >= deadline or (stop is not None and stop.is_set()):
                return ProbeResult(ip, ifname, None)
            timeout = min(deadline, sends[0] if sends else deadline) - now
            ready, _, _ = select.select([sock], [], [], max(timeout, 0.0))
            if not ready:
                continue
            for _ in range(256):
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    break
                found = _in_use(data, v4, packed, ours)
                if found is not None:
                    return ProbeResult(ip, ifname, _mac_str(found))
    finally:
        sock.close()


def _in_use(data: bytes, v4: bool, packed: bytes, ours: Set[bytes]) -> bytes | None:
    try:
        if v4:
            return conflicts.arp_in_use(arp.parse(data), packed, ours)
        return conflicts.nd_in_use(ndp.parse(data), packed, ours)
    except MalformedFrame:
        return None
