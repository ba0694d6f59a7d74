"""ARP answers under load: the client sends who-has requests at 20,000/s for about 2 s, (a) for
an IP the user-space responder owns on node1, then (b) for node1's own eth0 address, which
node1's kernel answers (the physical limit on this machine). Printed: the share answered, p50
and p99 latency of each, and the responder's figures as ratios of the kernel's.

Each request carries a sequence number in its sender hardware address (the Ethernet source
stays the client's, so the switch learns one MAC); both answerers reply to that address and
echo it as the target hardware address, which matches every reply to its request. Latency is
the client kernel's receive timestamp of the reply minus its transmit timestamp of the request,
both from one packet socket (SO_TIMESTAMPNS). The sender, the capture and the responder share
this machine's CPUs: the figures include that contention, for both answerers alike.

LEIFUR_BENCHMARKS=1 pytest tests/benchmarks/test_arp_answers.py -s
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.benchmark, pytest.mark.netns]

RATE = int(os.environ.get("LEIFUR_ARP_RATE", "20000"))
SECONDS = float(os.environ.get("LEIFUR_ARP_SECONDS", "2"))
KERNEL_PHASE = 1 << 24  # sequence numbers of phase (b) start here

# Client side, one process: sends each phase's requests paced by the clock (bounded in count and time).
SENDER = r"""
import json, socket, sys, time
a = json.loads(sys.argv[1])
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
tx.bind(("eth0", 0))
mac = bytes.fromhex(a["mac"].replace(":", ""))
spa = socket.inet_aton(a["spa"])
for phase in a["phases"]:
    time.sleep(a["pause"])
    head = b"\xff" * 6 + mac + b"\x08\x06" + bytes.fromhex("0001080006040001") + b"\x02\x5e"
    tail = spa + b"\x00" * 6 + socket.inet_aton(phase["tpa"])
    total, rate, base = int(phase["count"]), phase["rate"], phase["base"]
    start = time.monotonic()
    deadline = start + total / rate + 5
    i = 0
    while i < total and time.monotonic() < deadline:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while i < due:
            tx.send(head + (base + i).to_bytes(4, "big") + tail)
            i += 1
        time.sleep(0.0002)
    print(json.dumps({"tpa": phase["tpa"], "sent": i, "seconds": time.monotonic() - start}), flush=True)
"""

# Client side, another process: captures ARP in both directions with kernel timestamps; keeps
# (sequence number, timestamp) of outgoing requests and of incoming replies.
CAPTURE = r"""
import json, socket, struct, sys, time
from leifur.agent import bpf
a = json.loads(sys.argv[1])
# ETH_P_ALL: only such taps see outgoing frames. The filter keeps ARP and nothing else.
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
bpf.attach(rx, [(0x28, 0, 0, 12), (0x15, 0, 1, 0x0806), (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)])
rx.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: the capture must not be the bottleneck
rx.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
rx.bind(("eth0", 3))
rx.settimeout(0.1)
sent, answered, drops = {}, {}, 0
print("ready", flush=True)
end = time.monotonic() + a["seconds"]
while time.monotonic() < end:
    try:
        data, anc, _, addr = rx.recvmsg(128, 64)
    except (TimeoutError, socket.timeout):
        continue
    if len(data) < 42 or data[22:24] != b"\x02\x5e" and data[32:34] != b"\x02\x5e":
        continue
    ts = 0.0
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == 35:
            sec, nsec = struct.unpack("qq", cdata[:16])
            ts = sec + nsec / 1e9
    op = data[21]
    if addr[2] == 4 and op == 1:
        sent[int.from_bytes(data[24:28], "big")] = ts
    elif addr[2] != 4 and op == 2:
        seq = int.from_bytes(data[34:38], "big")
        answered.setdefault(seq, ts)
stats = rx.getsockopt(263, 6, 8)  # SOL_PACKET, PACKET_STATISTICS: (packets, drops)
print(json.dumps({"sent": sent, "answered": answered, "capture_drops": struct.unpack("II", stats)[1]}), flush=True)
"""


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(sent: dict[int, float], answered: dict[int, float]) -> dict[str, float]:
    latencies = sorted(answered[s] - t for s, t in sent.items() if s in answered)
    if not latencies:
        return {"requests": len(sent), "share": 0.0, "p50": float("nan"), "p99": float("nan")}
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(sent), "share": len(latencies) / len(sent), "p50": q[49], "p99": q[98]}


@pytest.mark.parametrize("lab", [1], indirect=True)
def test_arp_answers_at_20k_per_second(lab, tmp_path):
    node, client = lab.nodes[0], lab.client
    vip = f"192.0.2.{64 * lab.slot + 40}"
    log = (tmp_path / "responder.log").open("w")
    responder = lab.popen(node.netns, [sys.executable, "-m", "leifur.agent.responder", "--interface", "eth0",
                                       "--ip", vip, "--count", "1", "--log-level", "warning"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    assert json.loads(responder.stdout.readline())["ready"]
    count = int(RATE * SECONDS)
    pause = 0.5
    phases = [{"tpa": vip, "count": count, "rate": RATE, "base": 0},
              {"tpa": node.ip4, "count": count, "rate": RATE, "base": KERNEL_PHASE}]
    capture = lab.popen(client.netns, [sys.executable, "-c", CAPTURE,
                                       json.dumps({"seconds": 2 * (SECONDS + pause) + 3})],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert capture.stdout.readline().strip() == "ready"
    cpu0, t0 = _cpu_seconds(responder.pid), time.monotonic()
    sender = lab.run(client.netns, [sys.executable, "-c", SENDER, json.dumps(
        {"mac": client.mac, "spa": client.ip4, "phases": phases, "pause": pause})], timeout=120)
    cpu1, t1 = _cpu_seconds(responder.pid), time.monotonic()
    out, err = capture.communicate(timeout=120)
    assert capture.returncode == 0, err
    got = json.loads(out)
    sends = [json.loads(line) for line in sender.stdout.splitlines()]
    sent = {int(k): v for k, v in got["sent"].items()}
    answered = {int(k): v for k, v in got["answered"].items()}
    a = _summary({s: t for s, t in sent.items() if s < KERNEL_PHASE}, answered)
    b = _summary({s: t for s, t in sent.items() if s >= KERNEL_PHASE}, answered)
    assert responder.poll() is None

    print(f"\nARP answers at {RATE}/s for {SECONDS:g} s per answerer ({os.cpu_count()} CPUs; "
          f"sender, capture and answerer share them):")
    for phase in sends:
        print(f"  sent {phase['sent']} requests for {phase['tpa']} in {phase['seconds']:.2f} s "
              f"({phase['sent'] / phase['seconds']:.0f}/s)")
    print(f"  capture drops: {got['capture_drops']}")
    for name, s in (("responder (user space)", a), ("kernel (node1's own address)", b)):
        print(f"  {name:30s} answered {s['share'] * 100:6.2f}% of {s['requests']}, "
              f"p50 {s['p50'] * 1e6:7.0f} us, p99 {s['p99'] * 1e6:7.0f} us")
    if b["share"]:
        print(f"  responder / kernel: share {a['share'] / b['share']:.3f}, "
              f"p50 {a['p50'] / b['p50']:.2f}x, p99 {a['p99'] / b['p99']:.2f}x")
    answers = a["share"] * a["requests"]
    print(f"  responder CPU: {cpu1 - cpu0:.2f} s over the run ({t1 - t0:.1f} s), "
          f"{(cpu1 - cpu0) / max(answers, 1) * 1e6:.1f} us per answer")
    assert a["requests"] > 0 and b["requests"] > 0
