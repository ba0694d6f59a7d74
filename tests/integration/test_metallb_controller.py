"""The real MetalLB controller (v0.15, built from its Go module) against the real API server: the
baseline benchmarks measure Leifur against, and the source a migration from MetalLB starts from.

Each test gives MetalLB a namespace of its own for its configuration and a loadBalancerClass of
its own, so that it never touches a Service that Leifur's controllers (class unset, or theirs)
handle in the same session, nor they its Services."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest
from kubernetes import client

from leifur_dev import gobuild, metallb
from leifur_dev.cluster import wait_for

pytestmark = pytest.mark.controlplane

POOL_V4 = "203.0.113.224/29"
POOL_V6 = "2001:db8:4d4c::/125"


def in_pool(ip: str, cidr: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def test_crds_are_the_modules_and_served(api_client, metallb_crds):
    """Every CRD of the module's config/crd/bases is installed and served, IPAddressPool and
    L2Advertisement of metallb.io/v1beta1 among them; nothing of them is copied into this repository."""
    module_crds = {doc["metadata"]["name"] for doc in metallb.crds()}
    assert set(metallb_crds) == module_crds
    assert {"ipaddresspools.metallb.io", "l2advertisements.metallb.io", "bgppeers.metallb.io"} <= module_crds
    assert all(p.is_relative_to(metallb.module_dir()) for p in metallb.crd_files())
    assert f"@{gobuild.component_version(metallb.COMPONENT)}" in str(metallb.module_dir())
    custom = client.CustomObjectsApi(api_client)
    for plural in (metallb.POOLS, metallb.L2ADVERTISEMENTS):
        custom.list_cluster_custom_object(metallb.GROUP, metallb.VERSION, plural)
    # Installing again (a second session on a persistent control plane) updates in place.
    assert metallb.install_crds(api_client) == metallb_crds


def test_metallb_numbers_its_class_and_keeps_the_ip_across_a_crash(mlb):
    mlb.create(metallb.pool("pool-a", mlb.ns, [POOL_V4]))
    mlb.create(metallb.l2_advertisement("l2", mlb.ns))
    controller = mlb.controller()

    mlb.svc("a")
    (ip_a,) = mlb.wait_ips("a")
    assert in_pool(ip_a, POOL_V4)
    assert mlb.cluster.service(mlb.ns, "a")["metadata"]["annotations"][metallb.ALLOCATED_FROM_POOL] == "pool-a"
    # Services it must not touch: another class, and none (Leifur's by default).
    mlb.svc("other-class", lb_class="example.com/other")
    mlb.svc("no-class", lb_class=None)
    mlb.svc("b")
    (ip_b,) = mlb.wait_ips("b")
    assert ip_b != ip_a and in_pool(ip_b, POOL_V4)
    for name in ("other-class", "no-class"):
        svc = mlb.cluster.service(mlb.ns, name)
        assert metallb.ALLOCATED_FROM_POOL not in (svc["metadata"].get("annotations") or {})
        assert not any(in_pool(ip, POOL_V4) for ip in mlb.ips(name))

    peak, now = controller.peak_rss_bytes(), controller.rss_bytes()
    assert peak is not None and now is not None and peak >= now > 10 * 2**20
    assert Path(f"/proc/{controller.pid}/exe").resolve() == gobuild.binary_path(metallb.COMPONENT).resolve()

    # A crash, and a lower address freed while it is down: a restart that renumbered would move b there.
    controller.kill()
    mlb.cluster.delete_service(mlb.ns, "a")
    wait_for(lambda: not mlb.cluster.service_exists(mlb.ns, "a"), 30, what="a deleted")
    controller = mlb.controller()
    mlb.svc("c")
    assert mlb.wait_ips("c") == [ip_a]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert mlb.ips("b") == [ip_b]
        time.sleep(0.2)

    # A graceful stop ends it on SIGTERM, without the SIGKILL after the grace period.
    assert controller.stop(timeout=20) in (0, -15)


def test_metallb_gives_a_dual_stack_service_one_ip_per_family(mlb):
    mlb.create(metallb.pool("dual", mlb.ns, [POOL_V4, POOL_V6]))
    mlb.controller()
    mlb.svc("d", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
    ips = mlb.wait_ips("d", 2)
    assert sorted(ipaddress.ip_address(ip).version for ip in ips) == [4, 6]
    assert all(in_pool(ip, POOL_V4) or in_pool(ip, POOL_V6) for ip in ips)
