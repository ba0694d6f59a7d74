"""The agent from the image, in the node namespaces of the lab as the DaemonSet runs it (podman run
--network ns:..., uid 0 with NET_RAW and NET_ADMIN only, read-only root filesystem): the node the
election names answers ARP for a Service's IP with its MAC, and no other node does. In BGP mode,
the agent and its FRR sidecar from the image, as deploy/bgp runs them, advertise a Service's IP
to the lab's router (BIRD)."""

from __future__ import annotations

import contextlib
import subprocess

import pytest
from kubernetes.client.rest import ApiException

import leifur
from leifur.announce.election import owner
from leifur.model import names
from leifur_dev import bird
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


# Generous: a loaded 2-core machine; a session comes up in seconds when all is well.
SETTLE = 120


@pytest.mark.parametrize("stack", [{"node_count": 2, "router": True}], indirect=True)
def test_the_agent_and_its_frr_sidecar_from_the_image_advertise_a_service_ip_to_the_router(image, stack):
    lab = stack.lab
    router = bird.Router(lab).start()
    # Each node's shared volume: an emptyDir, which any container's user may write (mode 0777).
    dirs = {h.name: lab.state_dir / f"frr-{h.name}" for h in lab.nodes}
    volumes = (stack.workdir, stack.cp.directory / "pki" / "ca.crt")
    stack.agent_command = images.agent_command(image.ref, lab, volumes, frr_dirs=dirs)
    custom = stack.cluster.custom
    objects = [(names.BGPPEERS, f"{lab.id}-router"), (names.BGPADVERTISEMENTS, f"{lab.id}-upstream")]
    sidecars: dict[str, subprocess.Popen] = {}
    try:
        for host in lab.nodes:
            dirs[host.name].mkdir()
            dirs[host.name].chmod(0o777)
            with open(stack.workdir / f"frr-{host.name}.log", "a") as log:
                sidecars[host.name] = lab.popen(None, images.frr_command(image.ref, lab, host, dirs[host.name]),
                                                stdout=log, stderr=subprocess.STDOUT)
        for host in lab.nodes:
            # The sidecar's startup probe: the agent starts once this is there.
            wait_for(lambda h=host: (dirs[h.name] / "ready").exists() or sidecars[h.name].poll() is not None,
                     SETTLE, interval=0.5, what=f"FRR's sidecar up in {host.name}")
            assert sidecars[host.name].poll() is None, f"FRR's sidecar in {host.name} exited:\n{_log(stack, host)}"

        pool = stack.pool("bgp", [f"{stack.lan_ip(40)}-{stack.lan_ip(43)}"])
        for (plural, name), spec in zip(objects, (
                {"myASN": bird.NODE_ASN, "peerASN": bird.ROUTER_ASN, "peerAddress": lab.router_host.ip4},
                {"ipAddressPools": [pool]}), strict=True):
            kind = names.BGP_PEER if plural == names.BGPPEERS else names.BGP_ADVERTISEMENT
            custom.create_cluster_custom_object(names.GROUP, names.VERSION, plural, {
                "apiVersion": names.API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec})
        stack.start()
        ip = stack.service(stack.namespace("apps"), "web")

        wait_for(lambda: router.sessions() == {h.name: "Established" for h in lab.nodes}, SETTLE, interval=0.5,
                 what="a session from every node's FRR Established at the router")
        prefix = f"{ip}/32"
        paths = wait_for(lambda: len(p := router.paths(prefix)) == len(lab.nodes) and p, SETTLE, interval=0.5,
                         what=f"a path per node for {prefix} at the router")
        assert sorted(p.protocol for p in paths) == sorted(h.name for h in lab.nodes)
        want = sorted(h.ip4 for h in lab.nodes)
        assert sorted(hop for p in paths for hop in p.next_hops) == want
        wait_for(lambda: router.kernel_next_hops(prefix) == want, SETTLE, interval=0.5,
                 what=f"a multipath kernel route for {prefix} at the router")
        # The router reaches the Service through the advertised route.
        lab.serve(ip)
        assert wait_for(lambda: lab.connect(ip, source=lab.remote), SETTLE, interval=1,
                        what=f"the remote client's connection to {ip}") in {h.name for h in lab.nodes}

        # Each node's record shows its session as the agent read it from its sidecar's bgpd.
        for host in lab.nodes:
            def session(h=host) -> dict | None:
                record = custom.get_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES,
                                                          stack.node_name(h))
                sessions = ((record.get("status") or {}).get("bgp") or {}).get("sessions") or []
                return sessions[0] if sessions and sessions[0].get("state") == "Established" \
                    and sessions[0].get("prefixesAdvertised") == 1 else None
            found = wait_for(session, SETTLE, interval=0.5, what=f"{host.name}'s record showing its session")
            assert found["address"] == lab.router_host.ip4
        # Both programs are the image's.
        build = f"leifur-agent {leifur.__version__} (revision {images.revision_label(image.ref)})"
        for host in lab.nodes:
            assert build in stack.agents[host.name].log_path.read_text().splitlines()[0]

        # Stopping, the agents withdraw the route while their sidecars keep the sessions up (in the
        # Pod the sidecar is stopped after the agent, as a native sidecar).
        for agent in stack.agents.values():
            agent.signal(15)
        for agent in stack.agents.values():
            assert agent.wait_exit(30) == 0
        wait_for(lambda: not router.paths(prefix), SETTLE, interval=0.5, what=f"{prefix} withdrawn at the router")
        assert router.sessions() == {h.name: "Established" for h in lab.nodes}
        assert all(proc.poll() is None for proc in sidecars.values())
    finally:
        stack.stop()
        for plural, name in objects:
            with contextlib.suppress(ApiException):
                custom.delete_cluster_custom_object(names.GROUP, names.VERSION, plural, name)
        for host in lab.nodes:
            images.remove_container(images.agent_container(lab, host))
            images.remove_container(images.frr_container(lab, host))
        for proc in sidecars.values():
            proc.wait(60)
        router.stop()


def _log(stack, host) -> str:
    return (stack.workdir / f"frr-{host.name}.log").read_text(errors="replace")[-3000:]

