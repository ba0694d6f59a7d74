"""Fixtures for Leifur's test suites: the real control plane and the netns lab.

Tests that need root or the control plane are never skipped in CI: there they fail loudly
if what they need is missing. On a developer's machine without root they are skipped with
the reason.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client, config

from leifur_dev import controlplane, netlab

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0 or IN_CI:
        return
    skip = pytest.mark.skip(reason="needs root for network namespaces (runs in CI as root)")
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Kept on the item so that a fixture's teardown can tell whether, and why, the test failed.
    report = yield
    if report.when == "call":
        item.leifur_call_report = report
    return report


def failure_of(item: pytest.Item) -> str:
    """The test's failure in one message ('' if it passed); for fixtures' teardown."""
    report = getattr(item, "leifur_call_report", None)
    if report is None or not report.failed:
        return ""
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[controlplane.ControlPlane]:
    """One etcd + kube-apiserver for the whole session; stopped even when tests fail."""
    cp = controlplane.start()
    print(f"\ncontrol plane started in {cp.startup_seconds:.1f}s")
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def api_client(control_plane) -> client.ApiClient:
    return config.new_client_from_config(str(control_plane.kubeconfig))


@pytest.fixture
def core(api_client) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def namespace(core) -> Iterator[str]:
    """A fresh namespace per test. Without a controller-manager a namespace never finishes
    terminating and nothing deletes its contents, so its Services are deleted here: a
    LoadBalancer Service left behind would be picked up by a later test's controller."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    for svc in core.list_namespaced_service(name).items:
        core.delete_namespaced_service(svc.metadata.name, name)
    core.delete_namespace(name)


@pytest.fixture
def lab(request) -> Iterator[netlab.Lab]:
    """A LAN of node namespaces; the node count comes from @pytest.mark.parametrize or defaults to 2."""
    nodes = getattr(request, "param", 2)
    with netlab.Lab(nodes) as lab:
        yield lab


@pytest.fixture
def router_lab(request) -> Iterator[netlab.Lab]:
    """A LAN of node namespaces with the router and the remote client (netlab.Lab(router=True)); the
    node count, or the Lab's arguments as a dict, from @pytest.mark.parametrize (default 3). When
    the test failed, the tails of its daemons' logs (FRR, BIRD) are printed before they go."""
    param = getattr(request, "param", 3)
    kw = param if isinstance(param, dict) else {"node_count": param}
    with netlab.Lab(**kw, router=True) as lab:
        try:
            yield lab
        finally:
            if failure_of(request.node):
                from leifur_dev.bgpstack import daemon_log_tails

                print(daemon_log_tails(lab))


@pytest.fixture
def stack(control_plane, api_client, tmp_path, request):
    """Control plane + a LAN of 3 node namespaces + controller and agents, started by the test with
    `stack.start()` once it has created its pools. @pytest.mark.parametrize gives the node count, or
    the Lab's arguments as a dict."""
    param = getattr(request, "param", 3)
    # A count, or the Lab's arguments ({"node_count": 3, "backplane": True}).
    kw = param if isinstance(param, dict) else {"node_count": param}
    with _running_stack(control_plane, api_client, tmp_path, request, kw) as s:
        yield s


@contextlib.contextmanager
def _running_stack(control_plane, api_client, tmp_path, request, lab_args: dict,
                   after_stop: Callable[[], None] = lambda: None, tails: Callable[[], str] = str):
    """A Stack in a fresh lab; stopped (then `after_stop`) even when the test failed, then the
    agents' log tails, `tails()`, and the failure printed."""
    from leifur_dev.stack import Stack

    with netlab.Lab(**lab_args) as lab:
        s = Stack(control_plane, api_client, lab, tmp_path)
        try:
            yield s
        finally:
            try:
                s.stop()
                after_stop()
            finally:
                for a in s.agents.values():
                    print(f"--- {a.node_name} log tail ---\n{a.log_tail(30)}")
                if failure_of(request.node):
                    print(tails())
                # Again after the tails: CI shows the end of a failure's output, the tails fill it.
                if failure := failure_of(request.node):
                    print(f"--- the test failed ---\n{failure[:3000]}")


@pytest.fixture
def bgp_stack(control_plane, api_client, tmp_path, request):
    """A stack in BGP mode (leifur_dev.bgpstack): a router lab of 3 nodes, BIRD on the router, FRR
    per node driven by its agent; started by the test with `bgp_stack.start()` once it has created
    its pools and BGP objects. @pytest.mark.parametrize gives the node count, or a dict of
    `node_count` and `router` (a bird.RouterConfig)."""
    from leifur_dev.bgpstack import BGPStack, daemon_log_tails

    param = getattr(request, "param", 3)
    param = param if isinstance(param, dict) else {"node_count": param}
    holder: list[BGPStack] = []
    kw = {"node_count": param.get("node_count", 3), "router": True}
    with _running_stack(control_plane, api_client, tmp_path, request, kw,
                        after_stop=lambda: holder[0].stop(),
                        tails=lambda: daemon_log_tails(holder[0].lab)) as s:
        holder.append(BGPStack(s, param.get("router")))
        yield holder[0]


@pytest.fixture
def mlb(stack, request):
    """One test's MetalLB in the lab: its CRDs, namespace and class; its controller on the host and
    its speakers in the node namespaces, both against the lab's API server. Stopped before the lab."""
    from leifur_dev import metallb

    metallb.install_crds(stack.api_client)
    world = metallb.World(stack.api_client, stack.cp.kubeconfig, stack.workdir)
    yield world
    if failure_of(request.node):
        for p in world.processes():
            print(f"--- {p.log_path.name} ---\n{p.log_tail(60)}")
    world.teardown()


@pytest.fixture(scope="session")
def image():
    """The image of this checkout, built by podman as hack/image.sh builds it (cached by its
    inputs). Needs root, podman, runc and mmdebstrap: skipped without them, except in CI."""
    from leifur_dev import image as images

    if problem := images.missing():
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    images.reap_orphan_containers()
    return images.ensure_image()
