"""Runs in its own pytest invocation after the whole suite (see hack/test.sh): nothing of
ours may be left running or lying around."""

from __future__ import annotations

import os
from pathlib import Path

from leifur_dev import gobuild, netlab, runtime


def _our_server_processes() -> list[str]:
    """Live processes running a binary from our build cache, or a Leifur program, or a lab's
    daemon (FRR, BIRD: their command lines name the lab's state directory)."""
    cache_bin = str(gobuild.cache_root() / "bin")
    lab_state = str(netlab.state_dir(""))
    persistent = {
        pid for _, rec in runtime.Registry("controlplanes").records() if rec.get("persistent")
        for pid in rec.get("pids", {}).values()
    }
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in persistent or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        cmd = " ".join(a.decode(errors="replace") for a in argv if a)
        if cmd.startswith(cache_bin) or "leifur-agent" in cmd or "leifur-controller" in cmd or lab_state in cmd:
            found.append(f"{proc.name}: {cmd[:120]}")
    return found


def test_no_namespaces_or_links_remain():
    assert netlab.leftovers() == {"namespaces": [], "links": []}


def test_no_server_processes_remain():
    assert _our_server_processes() == []


def test_no_environment_is_still_registered():
    for kind in ("controlplanes", "labs"):
        leftover = [name for name, rec in runtime.Registry(kind).records() if not rec.get("persistent")]
        assert leftover == [], f"{kind} still registered: {leftover}"


def test_no_lab_state_directory_remains():
    persistent = {name for name, rec in runtime.Registry("labs").records() if rec.get("persistent")}
    assert sorted(p.name for p in netlab.state_dir("").iterdir() if p.name not in persistent) == []


def test_no_containers_of_the_tests_remain():
    from leifur_dev import image

    if image.missing():
        return  # no podman here: the image tests ran nowhere
    assert image.our_containers() == []
