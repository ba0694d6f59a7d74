"""The real MetalLB controller (v0.15, built from its Go module) against the real API server: the
baseline benchmarks measure Leifur against, and the source a migration from MetalLB starts from.

Each test gives MetalLB a namespace of its own for its configuration and a loadBalancerClass of
its own, so that it never touches a Service that Leifur's controllers (class unset, or theirs)
handle in the same session, nor they its Services."""

from __future__ import annotations

import contextlib
import ipaddress
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur_dev import gobuild, metallb
from leifur_dev.cluster import Cluster, wait_for
from leifur_dev.pytest_plugin import failure_of

pytestmark = pytest.mark.controlplane

POOL_V4 = "203.0.113.224/29"
POOL_V6 = "2001:db8:4d4c::/125"


@pytest.fixture(scope="module")
def metallb_crds(api_client) -> list[str]:
    return metallb.install_crds(api_client)


class MetalLBWorld:
    """One test's MetalLB: its configuration namespace, its class, its controller(s)."""

    def __init__(self, api_client: client.ApiClient, kubeconfig: Path, tmp: Path) -> None:
        self.cluster = Cluster(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.kubeconfig = kubeconfig
        self.tmp = tmp
        suffix = uuid.uuid4().hex[:8]
        self.ns = f"mlb-{suffix}"
        self.lb_class = f"metallb.io/test-{suffix}"
        self.cluster.ensure_namespace(self.ns)
        self.controllers: list[metallb.MetalLBController] = []

    def controller(self) -> metallb.MetalLBController:
        c = metallb.MetalLBController(self.kubeconfig, self.tmp / f"metallb-{len(self.controllers) + 1}.log",
                                      self.ns, lb_class=self.lb_class, log_level="debug")
        self.controllers.append(c)
        return c.start().wait_ready()

    def create(self, body: dict) -> dict:
        plural = {"IPAddressPool": metallb.POOLS, "L2Advertisement": metallb.L2ADVERTISEMENTS}[body["kind"]]
        return self.custom.create_namespaced_custom_object(metallb.GROUP, metallb.VERSION, self.ns, plural, body)

    def svc(self, name: str, lb_class: str | None = "", **spec) -> dict:
        """A LoadBalancer Service in MetalLB's namespace, of its class unless told otherwise."""
        cls = self.lb_class if lb_class == "" else lb_class
        if cls:
            spec["loadBalancerClass"] = cls
        return self.cluster.create_service(self.ns, name, **spec)

    def ips(self, name: str) -> list[str]:
        return self.cluster.ips(self.ns, name)

    def wait_ips(self, name: str, n: int = 1, timeout: float = 60) -> list[str]:
        return wait_for(lambda: len(ips := self.ips(name)) == n and ips, timeout, what=f"{n} IP(s) on {name}")

    def teardown(self) -> None:
        for c in self.controllers:
            c.stop()
        for s in self.cluster.core.list_namespaced_service(self.ns).items:
            self.cluster.delete_service(self.ns, s.metadata.name)
        for plural in (metallb.POOLS, metallb.L2ADVERTISEMENTS):
            with contextlib.suppress(ApiException):
                self.custom.delete_collection_namespaced_custom_object(metallb.GROUP, metallb.VERSION, self.ns, plural)
        with contextlib.suppress(ApiException):
            self.cluster.core.delete_namespace(self.ns)


@pytest.fixture
def mlb(api_client, control_plane, metallb_crds, tmp_path, request):
    world = MetalLBWorld(api_client, control_plane.kubeconfig, tmp_path)
    yield world
    if failure_of(request.node):
        for c in world.controllers:
            print(f"--- {c.log_path.name} ---\n{c.log_tail(60)}")
    world.teardown()


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
