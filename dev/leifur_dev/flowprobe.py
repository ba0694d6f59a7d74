"""A data-path probe through a router: one UDP datagram every interval to a Service IP, each from
one of many source ports, so that a multipath route spreads them over its next hops (the lab's
router hashes on layer 4). Each node's echo server (`echo_server`, behind kube-proxy's stand-in
DNAT) answers with the sequence number and its node's name.

Run in the remote client's namespace: `python -m leifur_dev.flowprobe --ip IP --port PORT
--interval 0.01 --duration 30`. Bounded by `duration` (or SIGTERM/SIGINT); it then waits
`--drain` seconds for answers still under way and prints one JSON object: every datagram's send
time and who answered it. Before that, `{"first": NODE}` on a line of its own once the first
answer came (`Stack.probe_first_answer` waits for it, `Stack.probe_result` reads the report).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import sys
import time

from leifur_dev import runtime

SOURCES = 64  # source ports: enough flows that every next hop of a multipath route gets some


def echo_server(port: int, node: str) -> None:
    """Answer every datagram on `port` (IPv4 and IPv6) with its first 8 bytes and `node`."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        data, peer = s.recvfrom(64)
        s.sendto(data[:8] + node.encode(), peer)


def probe(ip: str, port: int, interval: float, duration: float, drain: float) -> dict:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(SOURCES)]
    for s in socks:
        s.setblocking(False)
    stop = runtime.stop_on_signals()
    start = time.time()
    sent: list[float] = []  # seq -> send time, seconds since start
    answers: dict[int, tuple[float, str]] = {}  # seq -> (receive time, node)

    def receive() -> None:
        for s in select.select(socks, [], [], 0)[0]:
            while True:
                try:
                    data = s.recv(128)
                except BlockingIOError:
                    break
                seq = int.from_bytes(data[:8], "big")
                if seq < len(sent) and seq not in answers:
                    answers[seq] = (time.time() - start, data[8:].decode(errors="replace"))
                    if len(answers) == 1:
                        print(json.dumps({"first": answers[seq][1]}), flush=True)

    deadline = time.monotonic() + duration
    next_send = time.monotonic()
    while not stop.is_set() and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_send:
            seq = len(sent)
            sent.append(time.time() - start)
            # OSError: no route at the moment, a datagram lost like any other.
            with contextlib.suppress(OSError):
                socks[seq % SOURCES].sendto(seq.to_bytes(8, "big"), (ip, port))
            next_send = max(next_send + interval, now)
        select.select(socks, [], [], max(0.0, min(next_send, deadline) - time.monotonic()))
        receive()
    end = time.monotonic() + drain
    while time.monotonic() < end:
        select.select(socks, [], [], max(0.0, end - time.monotonic()))
        receive()
    for s in socks:
        s.close()
    return summarize(start, sent, answers)


def summarize(start: float, sent: list[float], answers: dict[int, tuple[float, str]]) -> dict:
    """The report: `lost` sequence numbers, each datagram's send time and answerer, the nodes that
    answered, and the blackout: from the first lost datagram's sending to the next answered one
    sent after the last lost (with several next hops only some flows lose, so the losses of one
    failure are interleaved with answers)."""
    lost = [seq for seq in range(len(sent)) if seq not in answers]
    blackout = 0.0
    if lost:
        after = next((sent[seq] for seq in range(lost[-1] + 1, len(sent)) if seq in answers), sent[-1])
        blackout = after - sent[lost[0]]
    return {"start": start, "sent": len(sent), "answered": len(answers), "lost": lost,
            "nodes": sorted({node for _, node in answers.values()}), "blackout": blackout,
            "send_times": [round(t, 6) for t in sent],
            "answers": {str(seq): [round(t, 6), node] for seq, (t, node) in sorted(answers.items())}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ip")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--drain", type=float, default=1.0)
    p.add_argument("--serve", metavar="NODE", help="be a node's echo server instead, answering as NODE")
    args = p.parse_args(argv)
    if args.serve:
        echo_server(args.port, args.serve)
        return 0
    # Bounded: one datagram per millisecond at most, for at most 600 s.
    if not args.ip or args.interval < 0.001 or args.duration > 600 or args.drain > 30:
        p.error("--ip, an interval >= 1 ms, a duration <= 600 s and a drain <= 30 s: every sending loop is bounded")
    print(json.dumps(probe(args.ip, args.port, args.interval, args.duration, args.drain)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
