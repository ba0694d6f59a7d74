"""Leifur's CRDs as the real API server serves them: `kubectl explain` prints the fields'
descriptions."""

from __future__ import annotations

import subprocess

from leifur_dev import gobuild


def _explain(control_plane, what: str) -> str:
    res = subprocess.run([str(gobuild.ensure_built("kubectl")), "--kubeconfig", str(control_plane.kubeconfig),
                          "explain", what], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return " ".join(res.stdout.split())  # explain wraps lines


def test_kubectl_explain_prints_the_descriptions(cluster, control_plane):
    spec = _explain(control_plane, "ipaddresspools.spec")
    assert "The addresses of the pool and how they are handed out." in spec
    assert "Give addresses from this pool to Services that do not name a pool." in spec
    deep = _explain(control_plane, "ipaddresspools.spec.serviceAllocation.namespaceSelectors.matchExpressions.operator")
    assert "In or NotIn (the label's value is or is not one of values)" in deep
    assert "The announced IPs, comma-separated" in _explain(control_plane, "l2nodestatuses.status.ips")
