"""The chaos suite: a seeded sequence of faults against the whole system, with the invariants
checked continuously (API observer) and afterwards (the client's LAN capture, process health).

CI runs a short run. The soak is the same test, longer:

    LEIFUR_CHAOS_STEPS=120 LEIFUR_CHAOS_SEED=3 LEIFUR_CHAOS_API_OUTAGE=30 \\
        .venv/bin/pytest tests/chaos -s -p no:cacheprovider --timeout 0

A failure prints the seed; the same seed replays the same sequence of faults.
"""

from __future__ import annotations

import os

import pytest

from leifur_dev.chaos import Chaos

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]

# By default every fault once.
STEPS = int(os.environ.get("LEIFUR_CHAOS_STEPS", "0"))
SEED = int(os.environ.get("LEIFUR_CHAOS_SEED", "20261124"))
API_OUTAGE = float(os.environ.get("LEIFUR_CHAOS_API_OUTAGE", "8"))
# Comma-separated words: run only the faults whose names contain one (to chase one fault).
ONLY = tuple(w for w in os.environ.get("LEIFUR_CHAOS_FAULTS", "").split(",") if w)


def test_invariants_hold_under_a_seeded_sequence_of_faults(stack):
    ns = stack.namespace("chaos")
    chaos = Chaos(stack, ns, SEED, api_outage_seconds=API_OUTAGE)
    pcap = stack.workdir / "chaos.pcap"
    capture = stack.capture(pcap)
    chaos.setup()
    steps = STEPS or len(chaos.faults())
    try:
        chaos.run(steps, ONLY)
    finally:
        # The proxy stays up: the stack's teardown goes through it.
        chaos.observer.stop()
        capture.terminate()
        capture.wait(10)
    ips = [f"{stack.lan_ip(i)}" for i in range(30, 60)]
    violations = chaos.observer.violations + chaos.lan_violations(str(pcap), ips)
    print(f"\nchaos run: seed {SEED}, {steps} steps, {chaos.observer.samples} Service states checked")
    print(f"{'fault':45} {'injected':>8} {'longest recovery':>17}")
    for name, st in sorted(chaos.stats.items()):
        print(f"{name:45} {st.injected:8d} {st.longest_recovery:16.1f}s")
    print(f"Services created or deleted during faults: {chaos.churned}")
    print(f"controller restarts after losing its Lease: {chaos.restarts}")
    print(f"API connections through the proxy: {chaos.proxy.connections}, reset {chaos.proxy.resets}, "
          f"stalled {chaos.proxy.stalls}")
    print(f"violations: {len(violations)}")
    crashed = chaos.crashed()
    assert not violations, f"seed {SEED}:\n" + "\n".join(f"  {v.invariant}: {v.detail}" for v in violations)
    assert not crashed, f"seed {SEED}: {crashed}"
