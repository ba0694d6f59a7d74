"""Fixtures for controller tests: CRDs installed, the real leifur-controller running, and
cleanup that leaves no Service, pool or finalizer behind for the next test."""

from __future__ import annotations

import contextlib
import uuid

import pytest
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
                   kubeconfig=None, command: list[str] | None = None) -> ControllerProcess:
        identity = identity or f"c{len(self.controllers) + 1}"
        c = ControllerProcess(kubeconfig or self.cp.kubeconfig, self.tmp / f"controller-{identity}.log", *extra,
                              token=metrics_reader_token(self.cluster.api_client), identity=identity,
                              command=command)
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


# -- MetalLB: built from its Go module, the source a migration starts from (leifur_dev.metallb.World) --


@pytest.fixture(scope="session")
def metallb_crds(api_client) -> list[str]:
    return metallb.install_crds(api_client)


@pytest.fixture
def mlb(api_client, control_plane, metallb_crds, tmp_path, request):
    world = metallb.World(api_client, control_plane.kubeconfig, tmp_path)
    yield world
    if failure_of(request.node):
        for p in world.processes():
            print(f"--- {p.log_path.name} ---\n{p.log_tail(60)}")
    world.teardown()
