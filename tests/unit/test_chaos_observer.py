"""The chaos observer's checks can fail: they are fed states that break the invariants."""

from __future__ import annotations

from kubernetes import client

from leifur.model import names
from leifur_dev.chaos import REPROBES, Chaos, Observer
from leifur_dev.probe import handover_windows


def svc(name: str, ips: list[str], port: int = 80, key: str | None = None) -> dict:
    annotations = {names.ANN_ALLOW_SHARED_IP: key} if key else {}
    return {"metadata": {"name": name, "namespace": "ns", "annotations": annotations},
            "spec": {"type": "LoadBalancer", "ports": [{"port": port, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def observer() -> Observer:
    return Observer(client.ApiClient(), "ns")


def test_two_services_on_one_ip_without_a_common_sharing_key_is_a_violation():
    o = observer()
    o.check([svc("a", ["192.0.2.40"], key="k", port=80), svc("b", ["192.0.2.40"], key="k", port=81)], 0.0)
    assert o.violations == []
    o.check([svc("a", ["192.0.2.40"]), svc("b", ["192.0.2.40"], port=81)], 1.0)
    assert [v.invariant for v in o.violations] == ["shared-incompatibly"]


def test_an_ip_change_needs_a_cause():
    o = observer()
    o.check([svc("a", ["192.0.2.40"])], 0.0)
    o.check([svc("a", ["192.0.2.41"])], 1.0)
    assert [v.invariant for v in o.violations] == ["ip-changed-without-cause"]
    o.violations.clear()
    o.cause("ns/a")
    o.check([svc("a", ["192.0.2.42"])], 2.0)
    # Gaining an IP (a second family, or a first IP) is not a change of an assigned one.
    o.check([svc("a", ["192.0.2.42", "2001:db8::1"])], 3.0)
    assert o.violations == []
    assert set(o.allocated) == {"192.0.2.40", "192.0.2.41", "192.0.2.42", "2001:db8::1"}


def test_handover_windows_group_back_and_forth_and_separate_handovers():
    a, b = "02:00:00:00:00:01", "02:00:00:00:00:02"
    claims = [(0.0, a), (1.0, a), (1.01, b), (1.02, a), (1.05, b), (5.0, b), (9.0, a)]
    windows = handover_windows(claims, 0.3)
    assert [(round(w[0], 2), round(w[1], 2)) for w in windows] == [(1.01, 1.05), (9.0, 9.0)]
    # Two MACs alternating for seconds is one long window, which the chaos check reports.
    flapping = [(t / 10, a if t % 2 else b) for t in range(40)]
    [(first, last, macs)] = handover_windows(flapping, 0.3)
    assert last - first > 3 and macs == {a, b}


def test_a_wrong_mac_is_a_violation_at_once_and_silence_only_when_it_lasts():
    a, b = "02:00:00:00:00:01", "02:00:00:00:00:02"
    chaos = Chaos(stack=None, namespace="ns", seed=1)
    chaos.observer = observer()
    # What each round of probes hears: the first round is silent for .41 and .42 (as when probes are
    # descheduled), .42 stays dark, .40 is answered by the wrong node.
    rounds = [{"192.0.2.40": [b], "192.0.2.41": [], "192.0.2.42": []}, {"192.0.2.42": []}]
    probed: list[set[str]] = []

    def wrong_answers(expected: dict[str, str]) -> dict[str, list[str]]:
        probed.append(set(expected))
        heard = rounds[min(len(probed) - 1, len(rounds) - 1)]
        return {ip: heard[ip] for ip in expected if ip in heard}

    chaos._wrong_answers = wrong_answers
    chaos._check_answered({"192.0.2.40": a, "192.0.2.41": a, "192.0.2.42": a}, "now")
    assert probed[1:] == [{"192.0.2.41", "192.0.2.42"}] + [{"192.0.2.42"}] * (REPROBES - 1)
    assert sorted(v.detail for v in chaos.observer.violations) == [
        f"192.0.2.40 answered by ['{b}'] now (expected {a})", f"192.0.2.42 answered by [] now (expected {a})"]
