"""A host on the LAN that claims an address it does not own, for the chaos suite.

Run inside the client namespace: `python -m leifur_dev.claimant --ip IP --duration 3`. It sends
gratuitous ARP (IPv4) or unsolicited Neighbor Advertisements (IPv6) for IP from its own MAC,
as a misconfigured host or an attacker would, every `--interval` for at most `--duration`
seconds or until SIGTERM, and prints how many it sent.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import socket
import sys
import time

from leifur.agent import arp, bpf, ndp
from leifur_dev.probe import _mac_bytes, _mac_str, _own_mac


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="leifur_dev.claimant", description=__doc__)
    p.add_argument("--interface", default="eth0")
    p.add_argument("--ip", required=True)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--duration", type=float, default=3.0)
    args = p.parse_args(argv)
    if args.interval < 0.01 or args.duration > 60:
        p.error("interval must be >= 10 ms and duration <= 60 s: every sending loop is bounded")
    mac = _mac_bytes(_own_mac(args.interface))
    v4 = ipaddress.ip_address(args.ip).version == 4
    frames = list(arp.build_gratuitous(args.ip, mac)) if v4 else [ndp.build_unsolicited_na(args.ip, mac)]
    stop = {"now": False}

    def _stop(*_a: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    proto = bpf.ETH_P_ARP if v4 else bpf.ETH_P_IPV6
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto)) as sock:
        sock.bind((args.interface, proto))
        deadline = time.monotonic() + args.duration
        while not stop["now"] and time.monotonic() < deadline:
            for frame in frames:
                sock.send(frame)
                sent += 1
            time.sleep(args.interval)
    print(json.dumps({"sent": sent, "mac": _mac_str(mac)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
