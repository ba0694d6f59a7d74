"""Fixtures for controller tests: CRDs installed, the real leifur-controller running, and
cleanup that leaves no Service, pool or finalizer behind for the next test."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur_dev import metallb
from leifur_dev.cluster import Cluster, ControllerProcess, install_crds, metrics_reader_token, wait_for
from leifur_dev.pytest_plugin import failure_of


@pytest.fixture(scope="session")
def cluster(api_client) -> Cluster:
    install_crds(api_client)
    c = Cluster(api_client)
    c.ensure_namespace("leifur-system")
    return c


class Env:
    """One test's world: its namespace, its pools, its controller(s)."""

    def __init__(self, cluster: Cluster, control_plane, tmp_path) -> None:
        self.cluster = cluster
        self.cp = control_plane
        self.tmp = tmp_path
        self.ns = f"t-{uuid.uuid4().hex[:8]}"
        cluster.ensure_namespace(self.ns)
        self.pools: list[str] = []
        self.controllers: list[ControllerProcess] = []

    def controller(self, *extra: str, identity: str | None = None, start: bool = True,
                   kubeconfig=None) -> ControllerProcess:
        identity = identity or f"c{len(self.controllers) + 1}"
        c = ControllerProcess(kubeconfig or self.cp.kubeconfig, self.tmp / f"controller-{identity}.log", *extra,
                              token=metrics_reader_token(self.cluster.api_client), identity=identity)
        self.controllers.append(c)
        if start:
            c.start().wait_ready()
        return c

    def pool(self, name: str, addresses: list[str], **spec) -> str:
        full = f"{self.ns}-{name}"
        self.cluster.create_pool(full, addresses, **spec)
        self.pools.append(full)
        return full

    def svc(self, name: str, **kw) -> dict:
        return self.cluster.create_service(self.ns, name, **kw)

    def ips(self, name: str) -> list[str]:
        return self.cluster.ips(self.ns, name)

    def wait_ips(self, name: str, n: int = 1, timeout: float = 30) -> list[str]:
        return wait_for(lambda: len(ips := self.ips(name)) == n and ips, timeout, what=f"{n} IP(s) on {name}")

    def wait_condition(self, name: str, status: str, reason: str | None = None, timeout: float = 30) -> dict:
        def check():
            c = self.cluster.service_condition(self.ns, name)
            return c if c and c["status"] == status and (reason is None or c["reason"] == reason) else None

        return wait_for(check, timeout, what=f"{name} condition {status}/{reason}")

    def teardown(self) -> None:
        core = self.cluster.core
        running = any(c.alive() for c in self.controllers)
        for s in core.list_namespaced_service(self.ns).items:
            self.cluster.delete_service(self.ns, s.metadata.name)
        for name in self.pools:
            self.cluster.delete_pool(name)
        if running:
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not core.list_namespaced_service(self.ns).items
                         and not any(self.cluster.pool_exists(p) for p in self.pools), 30, what="cleanup")
        for c in self.controllers:
            c.stop()
        # Whatever the controller could not finish (it may have been killed on purpose).
        for s in core.list_namespaced_service(self.ns).items:
            with contextlib.suppress(ApiException):
                core.patch_namespaced_service(s.metadata.name, self.ns, {"metadata": {"finalizers": None}},
                                              _content_type="application/merge-patch+json")
        for name in self.pools:
            with contextlib.suppress(ApiException):
                self.cluster.custom.patch_cluster_custom_object(
                    names.GROUP, names.VERSION, names.POOLS, name, {"metadata": {"finalizers": None}},
                    _content_type="application/merge-patch+json")
        with contextlib.suppress(ApiException):
            core.delete_namespace(self.ns)


@pytest.fixture
def env(cluster, control_plane, tmp_path, request):
    e = Env(cluster, control_plane, tmp_path)
    yield e
    if failure_of(request.node):
        for c in e.controllers:
            print(f"--- {c.log_path.name} ---\n{c.log_tail(80)}")
    e.teardown()


# -- MetalLB: its controller built from its Go module, the source a migration starts from --------


@pytest.fixture(scope="session")
def metallb_crds(api_client) -> list[str]:
    return metallb.install_crds(api_client)


class MetalLBWorld:
    """One test's MetalLB: its configuration namespace, its class, its controller(s). Each test gets
    a class of its own, so that MetalLB never touches a Service that Leifur's controllers (class
    unset, or theirs) handle in the same session, nor they its Services."""

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
        self.namespaces: list[str] = []

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

    def namespace(self, suffix: str, labels: dict[str, str] | None = None) -> str:
        """Another namespace for the test's Services, removed with the rest."""
        name = f"{self.ns}-{suffix}"
        self.cluster.ensure_namespace(name, labels)
        self.namespaces.append(name)
        return name

    def delete_services(self, timeout: float = 30) -> None:
        """Delete every Service of the test, and wait until they are gone (a controller still
        running releases them), or give up quietly: teardown strips what is left."""
        for ns in (self.ns, *self.namespaces):
            for s in self.cluster.core.list_namespaced_service(ns).items:
                self.cluster.delete_service(ns, s.metadata.name)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not any(self.cluster.core.list_namespaced_service(ns).items
                                     for ns in (self.ns, *self.namespaces)), timeout, what="Services deleted")

    def teardown(self) -> None:
        for c in self.controllers:
            c.stop()
        for ns in (self.ns, *self.namespaces):
            for s in self.cluster.core.list_namespaced_service(ns).items:
                self.cluster.delete_service(ns, s.metadata.name)
                with contextlib.suppress(ApiException):  # a finalizer no controller is left to remove
                    self.cluster.core.patch_namespaced_service(s.metadata.name, ns, {"metadata": {"finalizers": None}},
                                                               _content_type="application/merge-patch+json")
        for plural in (metallb.POOLS, metallb.L2ADVERTISEMENTS):
            with contextlib.suppress(ApiException):
                self.custom.delete_collection_namespaced_custom_object(metallb.GROUP, metallb.VERSION, self.ns, plural)
        for ns in (self.ns, *self.namespaces):
            with contextlib.suppress(ApiException):
                self.cluster.core.delete_namespace(ns)


@pytest.fixture
def mlb(api_client, control_plane, metallb_crds, tmp_path, request):
    world = MetalLBWorld(api_client, control_plane.kubeconfig, tmp_path)
    yield world
    if failure_of(request.node):
        for c in world.controllers:
            print(f"--- {c.log_path.name} ---\n{c.log_tail(60)}")
    world.teardown()
