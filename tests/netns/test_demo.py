"""The README's demo command runs end to end (non-interactively) and cleans up."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from leifur_dev import netlab

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]


def test_demo_assigns_announces_fails_over_and_tears_down():
    res = subprocess.run([sys.executable, "-m", "leifur_dev.cli", "demo", "--down"],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    assert "<pending>" in out
    got = re.search(r"/web got (192\.0\.2\.\d+)\.", out)
    assert got, out[-3000:]
    ip = got.group(1)
    assert re.search(rf"web\s+LoadBalancer\s+\S+\s+{re.escape(ip)}\s", out)
    owner = re.search(r"exactly one node answers, (node\d)", out).group(1)
    assert re.search(rf"served by {owner} ", out)
    failover = re.search(r"(node\d) took over .* no answer for (\d+) ms", out)
    assert failover and failover.group(1) != owner, out[-3000:]
    assert re.search(rf"now served by {failover.group(1)}\.", out)
    assert f"{owner} announces {ip} again." in out
    assert netlab.leftovers() == {"namespaces": [], "links": []}
