"""Leifur's CRDs as the real API server serves them: `kubectl explain` prints the fields'
descriptions, and the short names collide with no other load balancer's or CNI's names."""

from __future__ import annotations

import subprocess

import yaml
from kubernetes import client

from leifur.model import names
from leifur_dev import gobuild, metallb
from leifur_dev.cluster import CRD_DIR, wait_for

# Short names and resource names (plural, singular) of the kinds that live next to Leifur's in a
# cluster: a short name of ours equal to one of these makes `kubectl get NAME` mean the other
# kind, or ours, depending on discovery order.
CILIUM = {
    # cilium.io CiliumLoadBalancerIPPool (LB-IPAM), CiliumL2AnnouncementPolicy
    "CiliumLoadBalancerIPPool": {"ciliumloadbalancerippools", "ciliumloadbalancerippool",
                                 "ippools", "ippool", "lbippool", "lbippools"},
    "CiliumL2AnnouncementPolicy": {"ciliuml2announcementpolicies", "ciliuml2announcementpolicy",
                                   "l2announcement"},
}
CALICO = {
    # crd.projectcalico.org (and projectcalico.org/v3) IPPool, IPReservation
    "IPPool": {"ippools", "ippool"},
    "IPReservation": {"ipreservations", "ipreservation"},
}


def _ours() -> dict[str, list[str]]:
    crds = [yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml"))]
    return {c["spec"]["names"]["kind"]: c["spec"]["names"].get("shortNames", []) for c in crds}


def _metallb_names() -> dict[str, set[str]]:
    out = {}
    for crd in metallb.crds():
        n = crd["spec"]["names"]
        out[f"metallb.io {n['kind']}"] = {n["plural"], n["singular"], *n.get("shortNames", [])}
    return out


def test_our_short_names_collide_with_no_neighbours_names(api_client):
    neighbours = {**{f"cilium.io {k}": v for k, v in CILIUM.items()},
                  **{f"projectcalico.org {k}": v for k, v in CALICO.items()}, **_metallb_names()}
    # What the API server itself serves (built-in kinds), by its discovery.
    for group in client.ApisApi(api_client).get_api_versions().groups:
        if group.name == names.GROUP:
            continue
        for resource in client.CustomObjectsApi(api_client).get_api_resources(
                group.name, group.preferred_version.version).resources:
            neighbours[f"{group.name} {resource.kind}"] = {resource.name, *(resource.short_names or [])}
    for resource in client.CoreV1Api(api_client).get_api_resources().resources:
        neighbours[f"core {resource.kind}"] = {resource.name, *(resource.short_names or [])}
    assert "ippool" in neighbours["cilium.io CiliumLoadBalancerIPPool"]  # the test can fail

    ours = _ours()
    assert all(ours.values()), f"every kind has a short name: {ours}"
    clashes = [f"{kind} {short} = {other}" for kind, shorts in ours.items() for short in shorts
               for other, taken in neighbours.items() if short in taken]
    assert not clashes, f"short names that are another kind's names: {clashes}"
    # Ours, recognisably: each starts with lf (Leifur).
    assert all(s.startswith("lf") for shorts in ours.values() for s in shorts), ours


def _explain(control_plane, what: str) -> str:
    """`kubectl explain what`, once the API server publishes the CRD's OpenAPI (a moment after
    the CRD is established, asynchronously)."""
    def explain() -> str | None:
        res = subprocess.run([str(gobuild.ensure_built("kubectl")), "--kubeconfig", str(control_plane.kubeconfig),
                              "explain", what], capture_output=True, text=True, timeout=60)
        return " ".join(res.stdout.split()) if res.returncode == 0 else None  # explain wraps lines

    return wait_for(explain, 30, what=f"kubectl explain {what}")


def test_kubectl_explain_prints_the_descriptions(cluster, control_plane):
    spec = _explain(control_plane, "ipaddresspools.spec")
    assert "The addresses of the pool and how they are handed out." in spec
    assert "Give addresses from this pool to Services that do not name a pool." in spec
    deep = _explain(control_plane, "lfpool.spec.serviceAllocation.namespaceSelectors.matchExpressions.operator")
    assert "In or NotIn (the label's value is or is not one of values)" in deep
    assert "The announced IPs, comma-separated" in _explain(control_plane, "lfl2ns.status.ips")
