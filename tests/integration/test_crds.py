"""Leifur's CRDs as the real API server serves them: CEL refuses what a schema can tell is wrong
in a pool at apply time, `kubectl explain` prints the fields' descriptions, and the short names
collide with no other load balancer's or CNI's names."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

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


def _pool(addresses: list[str]) -> dict:
    return {"apiVersion": names.API_VERSION, "kind": "IPAddressPool",
            "metadata": {"name": f"cel-{uuid.uuid4().hex[:8]}"}, "spec": {"addresses": addresses}}


@pytest.fixture
def create_pool(cluster):
    """Create a pool for real (no controller runs here); each one created is deleted after the test."""
    created: list[str] = []

    def create(addresses: list[str]) -> dict:
        body = _pool(addresses)
        obj = cluster.custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.POOLS, body)
        created.append(body["metadata"]["name"])
        return obj

    yield create
    for name in created:
        cluster.delete_pool(name)


HOST_BITS = "has host bits set; write the network address (leifurctl validate names it)"


@pytest.mark.parametrize("addresses, refusal", [
    (["203.0.113.140/28"], f'spec.addresses[0]: Invalid value: "string": 203.0.113.140/28 {HOST_BITS}'),
    (["203.0.113.0/29", "2001:db8:1::1/64"],
     f'spec.addresses[1]: Invalid value: "string": 2001:db8:1::1/64 {HOST_BITS}'),
    (["203.0.113.10-2001:db8::10"], "203.0.113.10-2001:db8::10 mixes IPv4 and IPv6; a range must stay within one "
                                    "family"),
    (["2001:db8::10 - 203.0.113.10"], "2001:db8::10 - 203.0.113.10 mixes IPv4 and IPv6"),
    (["203.0.113.20-203.0.113.10"], "203.0.113.20-203.0.113.10 starts after it ends; did you mean "
                                    "203.0.113.10-203.0.113.20?"),
    # 9 sorts after 10 as text: the octets are compared as numbers.
    (["203.0.113.10-203.0.113.9"], "starts after it ends; did you mean 203.0.113.9-203.0.113.10?"),
    (["198.51.100.0 - 192.0.2.255"], "starts after it ends; did you mean 192.0.2.255-198.51.100.0?"),
    (["203.0.113.1-203.0.113.2-203.0.113.3"], "must be an IP address, a CIDR, or a range FIRST-LAST"),
    (["pool.example.com"], "must be an IP address, a CIDR, or a range FIRST-LAST"),
], ids=["IPv4 CIDR with host bits", "IPv6 CIDR with host bits, second entry", "range IPv4 to IPv6",
        "range IPv6 to IPv4, spaced", "reversed IPv4 range", "reversed IPv4 range, shorter last octet",
        "reversed IPv4 range across octets, spaced", "three parts", "a host name"])
def test_the_api_server_refuses_what_the_schema_can_tell(cluster, create_pool, addresses, refusal):
    with pytest.raises(ApiException) as refused:
        create_pool(addresses)
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert refusal in message, message


@pytest.mark.parametrize("addresses", [
    ["203.0.113.128/28"],
    ["2001:db8:2::/64", "203.0.113.144/29"],
    ["203.0.113.9-203.0.113.10"],
    ["203.0.113.5-203.0.113.5"],
    ["198.51.100.255 - 203.0.113.0"],
    ["2001:db8::ffff-2001:db8::1:0"],
    ["2001:db8::-2001:db8::1"],
    ["::-::1"],
    ["2001:db8::A-2001:db8::b"],
    ["203.0.113.7", "2001:db8::7"],
    ["255.255.255.254-255.255.255.255"],
    # CEL has no 128-bit integers to order IPv6 ends by: the controller reports this one on the
    # pool (Valid=False), as test_controller.py shows for what CEL lets through.
    ["2001:db8::ffff-2001:db8::1"],
], ids=["IPv4 CIDR", "IPv6 and IPv4 CIDRs", "IPv4 range across a digit", "one-address range",
        "IPv4 range across octets, spaced", "IPv6 range across groups", "IPv6 range from a network address",
        "IPv6 range from ::", "IPv6 range, upper case", "single addresses", "IPv4 range at the top",
        "reversed IPv6 range, left to the controller"])
def test_the_api_server_accepts_valid_pools(cluster, create_pool, addresses):
    assert create_pool(addresses)["spec"]["addresses"] == addresses


def test_kubectl_apply_shows_the_refusal(cluster, control_plane, tmp_path):
    """What an operator sees: kubectl apply names the entry and what is wrong with it."""
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(yaml.safe_dump(_pool(["192.0.2.77/24"])))
    res = subprocess.run([str(gobuild.ensure_built("kubectl")), "--kubeconfig", str(control_plane.kubeconfig),
                          "apply", "--server-side", "-f", str(manifest)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0, res.stdout
    assert f"192.0.2.77/24 {HOST_BITS}" in res.stderr, res.stderr


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
    # BGP mode's kinds, by plural and by short name, and the node record's sessions.
    assert "The peer's IP address (IPv4 or IPv6)" in _explain(control_plane, "bgppeers.spec.peerAddress")
    assert "Nodes that open a session with this peer" in _explain(control_plane, "lfbgppeer.spec.nodeSelectors")
    assert "standard ones as A:B" in _explain(control_plane, "lfbgpadv.spec.communities")
    assert "Packets missed in a row" in _explain(control_plane, "lfbfd.spec.detectMultiplier")
    assert "Valid and Established" in _explain(control_plane, "lfbgppeer.status.conditions")
    assert "When the session entered this state." in _explain(control_plane, "lfl2ns.status.bgp.sessions.since")
