"""`leifurctl migrate from-metallb` against the real API server: MetalLB's objects applied with kubectl
(MetalLB's CRDs from its Go module), read back by the converter, its output checked by `leifurctl
validate`, applied server-side by kubectl, accepted by Leifur's controller, and used by it.

Leifur's objects are cluster-scoped and keep MetalLB's names, so every name here carries the
test's own suffix; MetalLB's namespace is the test's own too.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur.cli import migrate
from leifur.model import names
from leifur_dev import gobuild, metallb
from leifur_dev.cluster import wait_for

pytestmark = pytest.mark.controlplane

PLURALS = {"IPAddressPool": names.POOLS, "L2Advertisement": names.L2ADVERTISEMENTS, names.BGP_PEER: names.BGPPEERS,
           names.BGP_ADVERTISEMENT: names.BGPADVERTISEMENTS, names.BFD_PROFILE: names.BFDPROFILES}


class MetalLBConfig:
    """A namespace of MetalLB configuration, and the Leifur objects made from it, removed afterwards."""

    def __init__(self, api_client: client.ApiClient, control_plane, env) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.kubeconfig = str(control_plane.kubeconfig)
        self.env = env
        self.id = uuid.uuid4().hex[:6]
        self.ns = f"mlb-{self.id}"
        env.cluster.ensure_namespace(self.ns)
        self.others: list[tuple[str, str]] = []  # (plural, name) of Leifur's objects that are not pools

    def name(self, short: str) -> str:
        return f"{short}-{self.id}"

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        exe = str(gobuild.ensure_built("kubectl"))
        return subprocess.run([exe, "--kubeconfig", self.kubeconfig, *args], input=stdin, capture_output=True,
                              text=True, timeout=120)

    def apply(self, objects: list[dict]) -> None:
        res = self.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))
        assert res.returncode == 0, res.stderr

    def migrate(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", "migrate", "from-metallb",
                               "--kubeconfig", self.kubeconfig, "--namespace", self.ns, *args],
                              capture_output=True, text=True, timeout=120)

    def validate_and_apply(self, text: str, converted: list[dict], tmp_path) -> None:
        """The converter's output passes `leifurctl validate --strict`, applies server-side, and is
        stored as written (spec and labels)."""
        out = tmp_path / "leifur.yaml"
        out.write_text(text)
        checked = subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", "validate", "--strict", str(out)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout
        applied = self.kubectl("apply", "--server-side", "-f", str(out))
        assert applied.returncode == 0, applied.stderr
        for obj in converted:
            stored = self.leifur_object(obj)
            assert {k: stored["spec"][k] for k in obj["spec"]} == obj["spec"]
            assert stored["metadata"].get("labels") == obj["metadata"].get("labels")

    def leifur_object(self, obj: dict) -> dict:
        return self.custom.get_cluster_custom_object(names.GROUP, names.VERSION, PLURALS[obj["kind"]],
                                                     obj["metadata"]["name"])

    def forget(self, objects: list[dict]) -> None:
        """Remove, after the test, the Leifur objects these would create (pools through env's teardown)."""
        for obj in objects:
            if obj["kind"] == "IPAddressPool":
                self.env.pools.append(obj["metadata"]["name"])
            else:
                self.others.append((PLURALS[obj["kind"]], obj["metadata"]["name"]))

    def cleanup(self) -> None:
        for plural, name in self.others:
            with contextlib.suppress(ApiException):
                self.custom.delete_cluster_custom_object(names.GROUP, names.VERSION, plural, name)
        with contextlib.suppress(ApiException):
            self.core.delete_namespace(self.ns)


@pytest.fixture
def config(metallb_crds, api_client, control_plane, env):
    c = MetalLBConfig(api_client, control_plane, env)
    yield c
    c.cleanup()


def test_an_l2_configuration_converts_from_the_cluster_validates_applies_and_allocates(config, env, tmp_path):
    ns = config.ns
    first, second, manual = config.name("first"), config.name("second"), config.name("manual")
    mlb_objects = [
        # The Services of the test's namespace, first: what the Service below must get.
        metallb.pool(first, ns, ["203.0.113.16/29"], serviceAllocation={"priority": 10, "namespaces": [env.ns]}),
        # Selected by labels, for Services that carry one, in namespaces that carry one.
        metallb.pool(second, ns, ["198.51.100.40-198.51.100.47", "2001:db8:6d6c::/124"], serviceAllocation={
            "priority": 20, "namespaceSelectors": [{"matchLabels": {"team": "web"}}],
            "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["shop"]}]}]})
        | {"metadata": {"name": second, "namespace": ns, "labels": {"tier": "web"}}},
        # Only on request; priority 0 is MetalLB's 'none'.
        metallb.pool(manual, ns, ["203.0.113.24/29"], autoAssign=False, avoidBuggyIPs=True,
                     serviceAllocation={"priority": 0}),
        metallb.l2_advertisement(config.name("by-name"), ns, ipAddressPools=[first, manual],
                                 nodeSelectors=[{"matchLabels": {"kubernetes.io/os": "linux"}}], interfaces=["eth0"]),
        metallb.l2_advertisement(config.name("by-label"), ns, ipAddressPoolSelectors=[
            {"matchLabels": {"tier": "web"}}], interfaces=["eth1"]),
        # Same name in another namespace, which MetalLB does not read: never seen by the converter.
        metallb.pool(first, "default", ["192.0.2.0/24"]),
    ]
    try:
        config.apply(mlb_objects)
        res = config.migrate()
        assert res.returncode == migrate.EXIT_OK, res.stderr
        converted = list(yaml.safe_load_all(res.stdout))
        config.forget(converted)
        assert sorted((o["kind"], o["metadata"]["name"]) for o in converted) == sorted(
            (o["kind"], o["metadata"]["name"]) for o in mlb_objects[:5])
        assert "priority 0 is MetalLB's 'no priority'" in res.stderr
        by_name = {o["metadata"]["name"]: o for o in converted}
        # autoAssign and avoidBuggyIPs are as MetalLB's CRD defaults them, which are Leifur's defaults too.
        assert by_name[first]["spec"] == {"addresses": ["203.0.113.16/29"], "autoAssign": True, "avoidBuggyIPs": False,
                                          "serviceAllocation": {"priority": 10, "namespaces": [env.ns]}}
        assert by_name[manual]["spec"] == {"addresses": ["203.0.113.24/29"], "autoAssign": False,
                                           "avoidBuggyIPs": True, "serviceAllocation": {}}
        assert by_name[second]["metadata"]["labels"] == {"tier": "web"}

        config.validate_and_apply(res.stdout, converted, tmp_path)

        env.controller()
        for pool in (first, second, manual):
            wait_for(lambda p=pool: (env.cluster.pool_condition(p, names.COND_POOL_VALID) or {}).get("status")
                     == "True", 30, what=f"{pool} Valid")
        env.svc("web")
        assert env.wait_ips("web") == ["203.0.113.16"]
    finally:
        with contextlib.suppress(ApiException):
            client.CustomObjectsApi(env.cluster.api_client).delete_namespaced_custom_object(
                metallb.GROUP, metallb.VERSION, "default", metallb.POOLS, first)


def test_a_bgp_configuration_converts_from_the_cluster_validates_and_applies(config, tmp_path):
    ns = config.ns
    pool, peer, fast, up = (config.name(n) for n in ("pool", "router", "fast", "up"))
    secret = config.name("bgp-pass")
    config.apply([
        metallb.pool(pool, ns, ["203.0.113.32/29"]),
        {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": peer, "namespace": ns},
         "spec": {"myASN": 64500, "peerASN": 64501, "peerAddress": "192.0.2.254", "holdTime": "9s",
                  "bfdProfile": fast, "passwordSecret": {"name": secret},
                  "nodeSelectors": [{"matchLabels": {"bgp": "yes"}}]}},
        # MetalLB peers in a VRF; Leifur does not: named, and the conversion fails until allowed.
        {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": config.name("vrf"),
                                                                             "namespace": ns},
         "spec": {"myASN": 64500, "peerASN": 64502, "peerAddress": "192.0.2.253", "vrf": "red"}},
        {"apiVersion": metallb.API_VERSION, "kind": "BGPAdvertisement", "metadata": {"name": up, "namespace": ns},
         "spec": {"ipAddressPools": [pool], "peers": [peer], "communities": ["no-export", "large:64500:1:2"],
                  "localPref": 150}},
        {"apiVersion": metallb.API_VERSION, "kind": "BFDProfile", "metadata": {"name": fast, "namespace": ns},
         "spec": {"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3}},
        {"apiVersion": metallb.API_VERSION, "kind": "Community", "metadata": {"name": "aliases", "namespace": ns},
         "spec": {"communities": [{"name": "no-export", "value": "65535:65281"}]}},
    ])
    res = config.migrate()
    assert (res.returncode, res.stdout) == (migrate.EXIT_UNTRANSLATED, ""), res.stderr
    (vrf,) = [line for line in res.stderr.splitlines() if line.startswith("cluster") and " not translated " in line]
    assert f"BGPPeer {ns}/{config.name('vrf')}" in vrf and "spec.vrf" in vrf, res.stderr
    assert "1 not translated" in res.stderr

    allowed = config.migrate("--allow-untranslated")
    assert allowed.returncode == migrate.EXIT_OK, allowed.stderr
    converted = list(yaml.safe_load_all(allowed.stdout))
    config.forget(converted)
    assert [(o["kind"], o["metadata"]["name"]) for o in converted] == [
        ("IPAddressPool", pool), ("BFDProfile", fast), ("BGPPeer", peer), ("BGPAdvertisement", up)]
    by_kind = {o["kind"]: o["spec"] for o in converted}
    # The defaults MetalLB's CRDs filled in are Leifur's too (port, aggregation lengths); the
    # keepalive MetalLB derives is written out; the Secret is named where Leifur's agents read it.
    assert by_kind["BGPPeer"] == {"myASN": 64500, "peerASN": 64501, "peerAddress": "192.0.2.254", "peerPort": 179,
                                  "nodeSelectors": [{"matchLabels": {"bgp": "yes"}}], "bfdProfile": fast,
                                  "holdTime": "9s", "keepaliveTime": "3s",
                                  "passwordSecret": {"name": secret, "namespace": "leifur-system"}}
    assert by_kind["BGPAdvertisement"] == {"ipAddressPools": [pool], "peers": [peer], "aggregationLength": 32,
                                           "aggregationLengthV6": 128, "localPref": 150,
                                           "communities": ["65535:65281", "large:64500:1:2"]}
    assert by_kind["BFDProfile"] == {"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3}
    assert "copy it there" in allowed.stderr and "written as its value 65535:65281" in allowed.stderr

    config.validate_and_apply(allowed.stdout, converted, tmp_path)


def test_a_namespace_without_metallb_objects_is_an_error(config):
    res = config.migrate()
    assert (res.returncode, res.stdout) == (migrate.EXIT_UNREADABLE, "")
    assert f"no MetalLB object in namespace {config.ns}" in res.stderr
