"""The netns lab is a real LAN: hosts reach each other across the switch, and node
namespaces reach the control plane on the host."""

from __future__ import annotations

import sys
import textwrap

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]


def test_client_pings_nodes_across_the_switch(lab):
    client = lab.client
    for node in lab.nodes:
        res = lab.run(client.netns, ["ping", "-c", "2", "-i", "0.2", "-W", "1", node.ip4], check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        res6 = lab.run(client.netns, ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", node.ip6], check=False)
        assert res6.returncode == 0, res6.stdout + res6.stderr
    # The client learnt each node's MAC over ARP: the nodes are distinct hosts on one L2 segment.
    neigh = lab.run(client.netns, ["ip", "neigh", "show", "dev", "eth0"]).stdout
    for node in lab.nodes:
        assert any(line.startswith(node.ip4 + " ") and node.mac in line for line in neigh.splitlines()), neigh


def test_namespaces_are_isolated_from_the_host(lab):
    node = lab.nodes[0]
    # A node namespace has only lo and eth0: nothing of the host leaks in.
    links = lab.run(node.netns, ["ip", "-o", "link", "show"]).stdout
    assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()) == ["eth0", "lo"]
    routes = lab.run(node.netns, ["ip", "route", "show"]).stdout
    assert "default" not in routes


def test_a_process_in_a_node_namespace_reaches_the_api_server(control_plane, lab, tmp_path):
    kubeconfig = control_plane.write_kubeconfig(
        tmp_path / "kubeconfig-lan", server=f"https://{lab.host_ip}:{control_plane.apiserver_port}")
    probe = textwrap.dedent("""
        import sys
        from kubernetes import client, config
        api = client.CoreV1Api(config.new_client_from_config(sys.argv[1]))
        print(",".join(sorted(ns.metadata.name for ns in api.list_namespace().items)))
        print(api.api_client.configuration.host)
    """)
    res = lab.run(lab.nodes[1].netns, [sys.executable, "-c", probe, str(kubeconfig)], check=False)
    assert res.returncode == 0, res.stderr
    names, host = res.stdout.split()
    assert "default" in names.split(",") and "kube-system" in names.split(",")
    assert host == f"https://{lab.host_ip}:{control_plane.apiserver_port}"
