"""Fixtures for the netns tests beyond the plugin's lab and stack: MetalLB in the lab."""

from __future__ import annotations

import pytest

from leifur_dev import metallb
from leifur_dev.pytest_plugin import failure_of


@pytest.fixture
def mlb(stack, request):
    """One test's MetalLB in the lab: its CRDs, namespace and class; its controller on the host and
    its speakers in the node namespaces, both against the lab's API server. Stopped before the lab."""
    metallb.install_crds(stack.api_client)
    world = metallb.World(stack.api_client, stack.cp.kubeconfig, stack.workdir)
    yield world
    if failure_of(request.node):
        for p in world.processes():
            print(f"--- {p.log_path.name} ---\n{p.log_tail(60)}")
    world.teardown()
