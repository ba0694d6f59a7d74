"""The README's demo command runs end to end (non-interactively) and cleans up."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from leifur.dev import netlab

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]


def test_demo_assigns_an_ip_and_tears_down():
    res = subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", "demo", "--down"],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "<pending>" in res.stdout
    got = re.search(r"demo/web got (203\.0\.113\.1\d)\.", res.stdout)
    assert got, res.stdout[-3000:]
    assert re.search(rf"web\s+LoadBalancer\s+\S+\s+{re.escape(got.group(1))}\s", res.stdout)
    assert "2 received" in res.stdout
    assert netlab.leftovers() == {"namespaces": [], "links": []}
