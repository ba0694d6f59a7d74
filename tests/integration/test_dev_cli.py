"""`leifur-dev up|down`: a control plane that outlives the command, usable by kubectl."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from leifur_dev import gobuild, runtime

pytestmark = pytest.mark.controlplane


def leifur_dev_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leifur_dev.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_dev_up_then_kubectl_then_dev_down(tmp_path):
    d = tmp_path / "env"
    up = leifur_dev_cli("up", "--dir", str(d))
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = d / "kubeconfig"
        assert f"kubeconfig: {kubeconfig}" in up.stdout
        # `dev up` has exited; the servers keep running and kubectl uses the kubeconfig as is.
        kubectl = str(gobuild.ensure_built("kubectl"))
        got = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "get", "namespaces", "-o", "json"],
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr
        assert "default" in [ns["metadata"]["name"] for ns in json.loads(got.stdout)["items"]]
        whoami = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json"],
                                capture_output=True, text=True, timeout=60)
        assert "system:masters" in json.loads(whoami.stdout)["status"]["userInfo"]["groups"]
        records = [r for _, r in runtime.Registry("controlplanes").records() if r["directory"] == str(d.resolve())]
        assert len(records) == 1 and records[0]["persistent"]
        pids = records[0]["pids"]
    finally:
        down = leifur_dev_cli("down", "--dir", str(d))
    assert down.returncode == 0, down.stderr
    assert not any(runtime.pid_alive(pid) for pid in pids.values())
    assert not kubeconfig.exists() and not (d / "etcd").exists()
