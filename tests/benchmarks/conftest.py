"""Benchmarks share the agent's netns stack fixture."""

from __future__ import annotations

import pytest

from leifur.dev import netlab
from leifur.dev.stack import Stack


@pytest.fixture
def stack(control_plane, api_client, tmp_path, request):
    nodes = getattr(request, "param", 3)
    with netlab.Lab(nodes) as lab:
        s = Stack(control_plane, api_client, lab, tmp_path)
        try:
            yield s
        finally:
            s.stop()
