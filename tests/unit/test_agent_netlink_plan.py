"""Netlink mode's pure decision: add what is missing, remove only our addresses that are no
longer wanted, never touch an operator's address, and report what cannot be done."""

from __future__ import annotations

from leifur.agent.netlink import AddressFailure, KernelAddress, fallback_label, kernel_has_ifa_proto, plan_changes


def addr(ifname: str, ip: str, prefixlen: int, ours: bool, index: int = 2) -> KernelAddress:
    return KernelAddress(ifname, index, ip, prefixlen, ours)


NODE4 = addr("eth0", "192.0.2.10", 26, ours=False)
NODE6 = addr("eth0", "2001:db8::10", 64, ours=False)


def test_adds_missing_and_removes_unwanted_ours():
    present = [NODE4, NODE6, addr("eth0", "192.0.2.41", 32, ours=True)]
    adds, removes, failures = plan_changes({"eth0": ["192.0.2.40", "2001:db8::40"]}, present, ["lo", "eth0"])
    assert adds == [("eth0", "192.0.2.40"), ("eth0", "2001:db8::40")]
    assert removes == [present[2]]
    assert failures == []


def test_reaching_the_desired_state_plans_nothing():
    present = [NODE4, addr("eth0", "192.0.2.40", 32, ours=True), addr("eth0", "2001:db8::40", 128, ours=True)]
    assert plan_changes({"eth0": ["192.0.2.40", "2001:db8:0::40"]}, present, ["eth0"]) == ([], [], [])


def test_an_operator_address_is_neither_added_again_nor_removed():
    operator = addr("eth0", "192.0.2.40", 32, ours=False)
    assert plan_changes({"eth0": ["192.0.2.40"]}, [NODE4, operator], ["eth0"]) == ([], [], [])
    assert plan_changes({}, [NODE4, operator], ["eth0"]) == ([], [], [])


def test_an_ip_moving_between_interfaces_is_added_on_one_and_removed_from_the_other():
    ours_on_eth0 = addr("eth0", "192.0.2.40", 32, ours=True)
    adds, removes, _ = plan_changes({"eth1": ["192.0.2.40"]}, [ours_on_eth0], ["eth0", "eth1"])
    assert adds == [("eth1", "192.0.2.40")] and removes == [ours_on_eth0]


def test_bad_input_becomes_failures_and_the_rest_goes_ahead():
    adds, removes, failures = plan_changes(
        {"eth9": ["192.0.2.40"], "eth0": ["bogus", "192.0.2.41"]}, [NODE4], ["eth0"])
    assert adds == [("eth0", "192.0.2.41")] and removes == []
    assert failures == [AddressFailure("eth0", "bogus", "add", "not an IP address"),
                        AddressFailure("eth9", "192.0.2.40", "add", "no such interface")]


def test_kernel_version_and_label_limits():
    assert kernel_has_ifa_proto("6.3.0") and kernel_has_ifa_proto("6.18.2-arch1") and kernel_has_ifa_proto("7.0")
    assert not kernel_has_ifa_proto("6.2.16") and not kernel_has_ifa_proto("5.15.0-91-generic")
    assert not kernel_has_ifa_proto("weird")
    assert fallback_label("eth0") == "eth0:lf"
    assert fallback_label("enp129s0f1np1") is None  # 13 + 3 characters do not fit in IFNAMSIZ
