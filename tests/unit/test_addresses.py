"""Every address the development environment puts on a wire or a certificate is from a
documentation range (RFC 5737, RFC 3849)."""

from __future__ import annotations

import ipaddress

import pytest

from leifur_dev import controlplane, netlab

DOC_RANGES = [ipaddress.ip_network(n) for n in
              ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


def documentation(addr: str) -> bool:
    net = ipaddress.ip_network(addr, strict=False)
    return any(net.version == r.version and net.subnet_of(r) for r in DOC_RANGES)


@pytest.mark.parametrize("slot", range(netlab.SLOTS))
def test_lab_addresses_are_documentation_addresses_and_slots_do_not_overlap(slot):
    lab = netlab.Lab(netlab.MAX_NODES, slot=slot, backplane=True)
    hosts = [lab._host(f"node{i}", i) for i in range(1, netlab.MAX_NODES + 1)] + [lab._host("client", 0)]
    backplane = ipaddress.ip_network(netlab.slot_addresses(slot)["backplane4"])
    nodes = hosts[:-1]
    assert all(documentation(h.backplane4) and ipaddress.ip_address(h.backplane4) in backplane for h in nodes)
    assert len({h.backplane4 for h in nodes}) == len(nodes) and not hosts[-1].backplane4
    addrs = netlab.slot_addresses(slot)
    subnet4, subnet6 = ipaddress.ip_network(addrs["subnet4"]), ipaddress.ip_network(addrs["subnet6"])
    for h in hosts:
        assert documentation(h.ip4) and documentation(h.ip6)
        assert ipaddress.ip_address(h.ip4) in subnet4 and ipaddress.ip_address(h.ip6) in subnet6
        assert ipaddress.ip_address(h.ip4) not in (subnet4.network_address, subnet4.broadcast_address)
    assert len({h.ip4 for h in hosts} | {addrs["host4"]}) == len(hosts) + 1
    assert len({h.mac for h in hosts}) == len(hosts)
    # Locally administered unicast MACs only.
    assert all(int(h.mac.split(":")[0], 16) & 0b11 == 0b10 for h in hosts)
    others = [ipaddress.ip_network(netlab.slot_addresses(s)[k]) for s in range(netlab.SLOTS) if s != slot
              for k in ("subnet4", "backplane4")]
    assert not any(subnet4.overlaps(o) or backplane.overlaps(o) for o in others)
    assert not backplane.overlaps(subnet4)


@pytest.mark.parametrize("slot", range(netlab.SLOTS))
def test_the_router_and_the_remote_client_have_documentation_addresses_of_their_slot_only(slot):
    lab = netlab.Lab(2, slot=slot, router=True)
    router, remote = lab._host("router", 0), lab._host("remote", 0)
    addrs = netlab.slot_addresses(slot)
    lan = [lab._host(f"node{i}", i) for i in range(1, netlab.MAX_NODES + 1)] + [lab._host("client", 0)]
    # The router is a LAN host like the others, at an address of its own.
    assert ipaddress.ip_address(router.ip4) in ipaddress.ip_network(addrs["subnet4"])
    assert ipaddress.ip_address(router.ip6) in ipaddress.ip_network(addrs["subnet6"])
    assert router.ip4 not in {h.ip4 for h in lan} | {addrs["host4"]} and router.mac not in {h.mac for h in lan}
    out4, out6 = ipaddress.ip_network(addrs["outside4"]), ipaddress.ip_network(addrs["outside6"])
    for ip in (remote.ip4, lab.router_outside4):
        assert documentation(ip) and ipaddress.ip_address(ip) in out4
    for ip in (remote.ip6, lab.router_outside6):
        assert documentation(ip) and ipaddress.ip_address(ip) in out6
    assert remote.ip4 != lab.router_outside4 and remote.ip6 != lab.router_outside6
    # Apart from every other network of every slot (overlaps() across families is False).
    others = [ipaddress.ip_network(netlab.slot_addresses(s)[k]) for s in range(netlab.SLOTS)
              for k in ("subnet4", "backplane4", "subnet6", "outside4", "outside6")
              if not (s == slot and k.startswith("outside"))]
    assert not any(out4.overlaps(o) or out6.overlaps(o) for o in others)


def test_lab_host_addresses_are_in_the_serving_certificate_list():
    assert [netlab.slot_addresses(s)["host4"] for s in range(netlab.SLOTS)] == list(controlplane.LAB_HOST_ADDRESSES)


def test_service_ranges_are_documentation_ranges_of_both_families():
    assert all(documentation(c) for c in controlplane.SERVICE_CIDRS)
    assert {ipaddress.ip_network(c).version for c in controlplane.SERVICE_CIDRS} == {4, 6}


def test_names_fit_the_kernel_interface_limit():
    lab = netlab.Lab(1, slot=0)
    assert len(lab.host_link) <= 15
