"""A host on the LAN that forges and replays agents' heartbeats, for the trust tests and chaos.

Run inside the client namespace: `python -m leifur_dev.attacker --node NAME --source IP
--targets IP,IP --claim leaving|alive --duration 5 [--recorded PCAP]`. Every datagram carries
the victim node's address as its source (raw IP, as any LAN host can send) and goes to the
heartbeat port of each target. Each round sends:
- an unsigned heartbeat for the victim (the format of agents before authentication), saying
  it leaves (`--claim leaving`, to make a peer take its IPs) or that it is alive and ready
  (`--claim alive`, to keep a dead victim's IPs dark), with an incarnation above any real one;
- the same claim in the signed format, with the key id of a real datagram and a made-up tag;
- the next of the victim's real datagrams recorded in PCAP (tcpdump on the victim's node),
  replayed unchanged.
Bounded: `--rate` rounds per second for `--duration` seconds at most, or until SIGTERM. It
prints one JSON line when the first round is out (`{"started": true}`), and a summary at the end:
wall-clock start and end, datagrams sent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from leifur.agent import heartbeat_wire as wire
from leifur.model.settings import HeartbeatSettings
from leifur_dev import runtime

PORT = HeartbeatSettings().port


def recorded(pcap: str | None, source: str) -> list[bytes]:
    """The heartbeat payloads `source` sent, as captured."""
    if not pcap:
        return []
    from scapy.all import IP, UDP, rdpcap

    return [bytes(p[UDP].payload) for p in rdpcap(pcap)
            if IP in p and UDP in p and p[IP].src == source and p[UDP].dport == PORT]


def forged(node: str, seq: int, claim: str, key_id: bytes) -> list[bytes]:
    body = {"node": node, "inc": 2**62, "seq": seq, "ready": claim == "alive", "leaving": claim == "leaving",
            "view": ""}
    unsigned = wire.MAGIC1 + json.dumps(body, separators=(",", ":")).encode()
    body["ts"] = time.time_ns() // 1_000_000
    signed = wire.MAGIC2 + key_id + json.dumps(body, separators=(",", ":")).encode() + os.urandom(wire.TAG_BYTES)
    return [unsigned, signed]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="leifur_dev.attacker", description=__doc__)
    p.add_argument("--node", required=True, help="the victim's node name")
    p.add_argument("--source", required=True, help="the victim's IPv4 address, forged as the source")
    p.add_argument("--targets", required=True, help="comma-separated IPv4 addresses of the peers")
    p.add_argument("--claim", choices=("leaving", "alive"), required=True)
    p.add_argument("--recorded", help="a pcap of the victim's real heartbeats, to replay")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=50.0, help="rounds per second")
    args = p.parse_args(argv)
    from scapy.all import IP, UDP, Raw, conf

    replays = recorded(args.recorded, args.source)
    key_id = next((r[len(wire.MAGIC2):len(wire.MAGIC2) + wire.KEY_ID_BYTES] for r in replays
                   if r.startswith(wire.MAGIC2)), b"\0" * wire.KEY_ID_BYTES)
    targets = args.targets.split(",")
    stop = runtime.stop_on_signals()
    sock = conf.L3socket()
    sent, start = 0, time.time()
    deadline = time.monotonic() + args.duration
    for i in range(int(args.duration * args.rate) + 1):
        if stop.is_set() or time.monotonic() > deadline:
            break
        payloads = forged(args.node, i + 1, args.claim, key_id)
        if replays:
            payloads.append(replays[i % len(replays)])
        for target in targets:
            for payload in payloads:
                sock.send(IP(src=args.source, dst=target) / UDP(sport=PORT, dport=PORT) / Raw(payload))
                sent += 1
        if i == 0:
            print(json.dumps({"started": True}), flush=True)
        time.sleep(1 / args.rate)
    sock.close()
    print(json.dumps({"start": start, "end": time.time(), "sent": sent, "replayable": len(replays)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
