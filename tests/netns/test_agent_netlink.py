"""Against the real kernel, inside lab namespaces: read_links sees a node's eth0 as it is, and
netlink mode puts IPs on eth0 so that the kernel answers the client, takes them away so that
nobody does, and cleans up a killed agent's leftovers without touching an operator's addresses."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.netns]

PY = sys.executable


def wait_for(check, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def vips(lab, last: int = 40) -> tuple[str, str]:
    # Compressed, as the kernel and our JSON write them (slot 0 would otherwise read 2001:db8:0:0::40).
    return f"192.0.2.{64 * lab.slot + last}", ipaddress.ip_address(f"2001:db8:0:{lab.slot}::{last}").compressed


def addrs(lab, node, dev: str = "eth0") -> dict[str, dict]:
    """The addresses on `dev`, keyed by address, as iproute2 reports them (flags are keys: "nodad", "tentative")."""
    out = lab.run(node.netns, ["ip", "-j", "addr", "show", "dev", dev]).stdout
    return {a["local"]: a for a in json.loads(out)[0]["addr_info"]}


def netlink(lab, node, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return lab.run(node.netns, [PY, "-m", "leifur.agent.netlink", *args], check=check)


def kernel_protos(lab, node) -> dict[str, int | None]:
    """IFA_PROTO of every address, read directly (this iproute2 may be too old to print it)."""
    code = textwrap.dedent("""
        import ipaddress, json
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            print(json.dumps({ipaddress.ip_address(m.get("IFA_LOCAL") or m.get("IFA_ADDRESS")).compressed:
                              m.get("IFA_PROTO") for m in ipr.addr("dump")}))
    """)
    return json.loads(lab.run(node.netns, [PY, "-c", code]).stdout)


def arping(lab, ip: str) -> subprocess.CompletedProcess:
    return lab.run(lab.client.netns, ["arping", "-c", "2", "-w", "2", "-I", "eth0", ip], check=False)


def ping(lab, ip: str) -> bool:
    argv = ["ping", *(["-6"] if ":" in ip else []), "-c", "1", "-W", "1", ip]
    return lab.run(lab.client.netns, argv, check=False).returncode == 0


def client_neigh_mac(lab, ip: str) -> str | None:
    out = json.loads(lab.run(lab.client.netns, ["ip", "-j", "neigh", "show", ip]).stdout or "[]")
    return out[0].get("lladdr") if out else None


def test_read_links_sees_eth0_as_a_veth_with_its_addresses(lab):
    node = lab.nodes[0]
    vip4, _ = vips(lab)
    code = textwrap.dedent("""
        import json, sys
        from leifur.agent.links import read_links
        from leifur.announce.interfaces import select_interfaces
        links = read_links()
        print(json.dumps({
            "links": [{**l.__dict__, "networks": [str(n) for n in l.networks]} for l in links],
            "unnamed": select_interfaces(sys.argv[1], links),
            "named": select_interfaces(sys.argv[1], links, ["eth0"]),
        }))
    """)
    out = json.loads(lab.run(node.netns, [PY, "-c", code, vip4]).stdout)
    links = {link["name"]: link for link in out["links"]}
    assert set(links) == {"lo", "eth0"}
    eth0 = links["eth0"]
    assert eth0["kind"] == "veth"
    assert eth0["mac"] == node.mac
    assert eth0["up"] and not eth0["noarp"] and not eth0["bridge_slave"] and not eth0["loopback"]
    assert f"{node.ip4}/26" in eth0["networks"]
    assert str(ipaddress.ip_interface(f"{node.ip6}/64")) in eth0["networks"]
    assert any(n.startswith("fe80::") for n in eth0["networks"])
    assert links["lo"]["loopback"] and "127.0.0.1/8" in links["lo"]["networks"]
    # In the lab eth0 is a veth: only naming it makes it announce.
    assert out["unnamed"] == [] and out["named"] == ["eth0"]


def test_kernel_answers_for_added_ips_and_stops_when_they_are_removed(lab):
    node = lab.nodes[0]
    vip4, vip6 = vips(lab)

    res = netlink(lab, node, "set", f"eth0={vip4},{vip6}")
    assert json.loads(res.stdout)["failures"] == []
    on_eth0 = addrs(lab, node)
    assert on_eth0[vip4]["prefixlen"] == 32
    assert on_eth0[vip6]["prefixlen"] == 128
    # Usable at once: no duplicate address detection, so never tentative.
    assert on_eth0[vip6].get("nodad") is True and "tentative" not in on_eth0[vip6]
    protos = kernel_protos(lab, node)
    assert protos[vip4] == protos[vip6] == 0x4C
    assert protos[node.ip4] is None  # the lab's own address is not tagged

    # The client reaches both and learns node1's MAC for them.
    reply = arping(lab, vip4)
    assert reply.returncode == 0, reply.stdout + reply.stderr
    assert node.mac.lower() in reply.stdout.lower()
    wait_for(lambda: ping(lab, vip4), what=f"ping {vip4}")
    wait_for(lambda: ping(lab, vip6), what=f"ping -6 {vip6}")
    assert client_neigh_mac(lab, vip4) == node.mac
    assert client_neigh_mac(lab, vip6) == node.mac

    # Idempotent: the same desired state changes nothing and fails nothing.
    again = json.loads(netlink(lab, node, "set", f"eth0={vip4},{vip6}").stdout)
    assert again == {"failures": [], "ours": [["eth0", vip4], ["eth0", vip6]]}
    def shape(found):
        return {(ip, a["prefixlen"]) for ip, a in found.items()}
    assert shape(addrs(lab, node)) == shape(on_eth0)

    # Removed: nobody answers any more.
    assert json.loads(netlink(lab, node, "set").stdout) == {"failures": [], "ours": []}
    assert vip4 not in addrs(lab, node) and vip6 not in addrs(lab, node)
    silent = arping(lab, vip4)
    assert silent.returncode != 0 and node.mac.lower() not in silent.stdout.lower(), silent.stdout
    lab.run(lab.client.netns, ["ip", "neigh", "flush", "to", vip6])
    assert not ping(lab, vip6)
    assert client_neigh_mac(lab, vip6) != node.mac


def test_cleanup_after_sigkill_removes_our_leftovers_only(lab):
    node = lab.nodes[0]
    vip4, vip6 = vips(lab)
    op4, op6 = vips(lab, 41)
    # An operator's addresses, shaped exactly like ours but without our tag.
    lab.run(node.netns, ["ip", "addr", "add", f"{op4}/32", "dev", "eth0"])
    lab.run(node.netns, ["ip", "-6", "addr", "add", f"{op6}/128", "dev", "eth0", "nodad"])

    first = lab.popen(node.netns, [PY, "-m", "leifur.agent.netlink", "set", f"eth0={vip4},{vip6}", "--hold"],
                      stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    lines = [first.stdout.readline() for _ in range(2)]
    assert lines[1].strip() == "ready", lines
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert {vip4, vip6, op4, op6} <= set(addrs(lab, node))

    removed = json.loads(netlink(lab, node, "cleanup").stdout)
    assert removed == [["eth0", vip4], ["eth0", vip6]]
    left = addrs(lab, node)
    assert vip4 not in left and vip6 not in left
    assert op4 in left and op6 in left
    assert arping(lab, op4).returncode == 0  # and the kernel still answers for the operator's address
    # Nothing of ours is left for a second cleanup.
    assert json.loads(netlink(lab, node, "cleanup").stdout) == []


def test_an_operator_address_that_is_also_desired_is_never_removed(lab):
    node = lab.nodes[0]
    op4, _ = vips(lab, 42)
    lab.run(node.netns, ["ip", "addr", "add", f"{op4}/32", "dev", "eth0"])
    assert json.loads(netlink(lab, node, "set", f"eth0={op4}").stdout) == {"failures": [], "ours": []}
    assert json.loads(netlink(lab, node, "set").stdout) == {"failures": [], "ours": []}
    assert json.loads(netlink(lab, node, "cleanup").stdout) == []
    assert op4 in addrs(lab, node)


def test_one_bad_address_does_not_stop_the_others(lab):
    node = lab.nodes[0]
    vip4, vip6 = vips(lab)
    res = netlink(lab, node, "set", "nosuch0=192.0.2.1", f"eth0={vip4},not-an-ip,{vip6}", check=False)
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert {(f["ifname"], f["ip"]) for f in out["failures"]} == {("nosuch0", "192.0.2.1"), ("eth0", "not-an-ip")}
    assert out["ours"] == [["eth0", vip4], ["eth0", vip6]]
    netlink(lab, node, "cleanup")


def test_without_ifa_proto_ipv4_is_recognised_by_label_and_ipv6_only_by_its_process(lab):
    """The pre-6.3 fallback, forced: what a fresh process can and cannot find."""
    node = lab.nodes[0]
    vip4, vip6 = vips(lab)
    v4b, v6b = vips(lab, 43)
    # In one process everything it added is removed again, IPv6 included (remembered).
    code = textwrap.dedent("""
        import json, sys
        from leifur.agent.netlink import NetlinkAnnouncer
        nl = NetlinkAnnouncer(tag_with_proto=False)
        assert nl.set_ips({"eth0": sys.argv[1:]}) == []
        added = nl.ours()
        assert nl.set_ips({}) == []
        print(json.dumps({"added": added, "after": nl.ours()}))
        nl.close()
    """)
    out = json.loads(lab.run(node.netns, [PY, "-c", code, v4b, v6b]).stdout)
    assert out == {"added": [["eth0", v4b], ["eth0", v6b]], "after": []}
    assert v4b not in addrs(lab, node) and v6b not in addrs(lab, node)

    # Across processes, only the labelled IPv4 address is recognisable.
    netlink(lab, node, "set", "--no-proto", f"eth0={vip4},{vip6}")
    on_eth0 = addrs(lab, node)
    assert on_eth0[vip4]["label"] == "eth0:lf"
    assert "tentative" not in on_eth0[vip6]
    assert kernel_protos(lab, node)[vip4] is None
    assert json.loads(netlink(lab, node, "cleanup").stdout) == [["eth0", vip4]]
    assert vip6 in addrs(lab, node)  # the documented limitation
    lab.run(node.netns, ["ip", "-6", "addr", "del", f"{vip6}/128", "dev", "eth0"])
