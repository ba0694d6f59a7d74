"""The agent from the image, in the node namespaces of the lab as the DaemonSet runs it (podman run
--network ns:..., uid 0 with NET_RAW and NET_ADMIN only, read-only root filesystem): the node the
election names answers ARP for a Service's IP with its MAC, and no other node does."""

from __future__ import annotations

import pytest

import leifur
from leifur.announce.election import owner
from leifur_dev import image as images
from leifur_dev.cluster import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]


@pytest.mark.parametrize("stack", [2], indirect=True)
def test_the_agent_from_the_image_answers_arp_for_a_service_ip(image, stack):
    # Its kubeconfig and keys (under the stack's workdir) and the API server's CA the kubeconfig names.
    volumes = (stack.workdir, stack.cp.directory / "pki" / "ca.crt")
    stack.agent_command = images.agent_command(image.ref, stack.lab, volumes)
    try:
        pool = stack.pool("lan", [f"{stack.lan_ip(40)}-{stack.lan_ip(44)}"])
        stack.advertisement("lan", ipAddressPools=[pool], interfaces=["eth0"])
        stack.start()
        ns = stack.namespace("apps")
        ip = stack.service(ns, "web")
        expected = stack.host_of(owner([stack.node_name(h) for h in stack.lab.nodes], ip))
        macs = wait_for(lambda: m if len(m := stack.who_answers(ip)) == 1 else None, 30, interval=0.2,
                        what=f"exactly one MAC answering for {ip}")
        assert macs == [expected.mac]
        # The agents are the image's programs: their first log line names its build.
        build = f"leifur-agent {leifur.__version__} (revision {images.revision_label(image.ref)})"
        for host in stack.lab.nodes:
            agent = stack.agents[host.name]
            assert build in agent.log_path.read_text().splitlines()[0]
            assert agent.metric("leifur_agent_announced_ips", family="ipv4") == (host is expected)
    finally:
        stack.stop()
        for host in stack.lab.nodes:
            images.remove_container(images.agent_container(stack.lab, host))
