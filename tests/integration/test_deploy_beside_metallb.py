"""Leifur's agent beside MetalLB's speaker on the same nodes, as during a cutover: no port that
both open on a node's network. MetalLB's manifests are read from its Go module (v0.15), every
flavour it ships (native, FRR, FRR-K8s)."""

from __future__ import annotations

import re

import pytest
import yaml

from leifur_dev import chart, metallb
from leifur_dev.cluster import REPO

pytestmark = pytest.mark.controlplane

# FRR's own listeners in the FRR flavours, which no manifest names: BGP, BFD (single and multi
# hop, echo), and the daemons' vty ports on loopback (zebra, bgpd, bfdd, staticd).
FRR_PORTS = {179, 3784, 3785, 4784, 2601, 2605, 2616, 2617}
_PORT_FLAG = re.compile(r"--[a-z-]*port[a-z-]*=(\d+)$|--[a-z-]*address[a-z-]*=\S*:(\d+)$")


def host_ports(manifests: list[dict]) -> set[int]:
    """Every port a Pod on the host network opens, as its manifest says: container ports, ports
    given in flags, probe ports."""
    found: set[int] = set()
    for obj in manifests:
        pod = (((obj or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
        if not pod.get("hostNetwork"):
            continue
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            found |= {p["containerPort"] for p in c.get("ports") or []}
            for arg in (c.get("args") or []) + (c.get("command") or []):
                m = _PORT_FLAG.search(str(arg))
                if m:
                    found.add(int(m.group(1) or m.group(2)))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, int):
                    found.add(port)
    return found


def test_no_port_of_our_agent_is_one_metallb_opens_on_the_node() -> None:
    ours = host_ports(list(yaml.safe_load_all(chart.kustomize(REPO / "deploy"))))
    assert {7474, 7475, 7476} <= ours  # heartbeats, health, metrics: the test reads what it means to
    files = sorted((metallb.module_dir() / "config" / "manifests").glob("metallb-*.yaml"))
    assert {f.name for f in files} >= {"metallb-native.yaml", "metallb-frr.yaml", "metallb-frr-k8s.yaml"}
    theirs = FRR_PORTS | {p for f in files for p in host_ports(list(yaml.safe_load_all(f.read_text())))}
    assert {7472, 7473, 7946} <= theirs  # MetalLB's speaker: metrics, FRR metrics, memberlist
    assert not ours & theirs, f"ports both open on a node: {sorted(ours & theirs)}"
