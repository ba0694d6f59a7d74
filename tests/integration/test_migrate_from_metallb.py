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
        self.advertisements: list[str] = []

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

    def leifur_object(self, obj: dict) -> dict:
        plural = names.POOLS if obj["kind"] == "IPAddressPool" else names.L2ADVERTISEMENTS
        return self.custom.get_cluster_custom_object(names.GROUP, names.VERSION, plural, obj["metadata"]["name"])

    def forget(self, objects: list[dict]) -> None:
        """Remove, after the test, the Leifur objects these would create (pools through env's teardown)."""
        for obj in objects:
            if obj["kind"] == "IPAddressPool":
                self.env.pools.append(obj["metadata"]["name"])
            else:
                self.advertisements.append(obj["metadata"]["name"])

    def cleanup(self) -> None:
        for name in self.advertisements:
            with contextlib.suppress(ApiException):
                self.custom.delete_cluster_custom_object(names.GROUP, names.VERSION, names.L2ADVERTISEMENTS, name)
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

        out = tmp_path / "leifur.yaml"
        out.write_text(res.stdout)
        checked = subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", "validate", "--strict", str(out)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout

        applied = config.kubectl("apply", "--server-side", "-f", str(out))
        assert applied.returncode == 0, applied.stderr
        for obj in converted:
            stored = config.leifur_object(obj)
            assert {k: stored["spec"][k] for k in obj["spec"]} == obj["spec"]
            assert stored["metadata"].get("labels") == obj["metadata"].get("labels")

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


def test_bgp_objects_in_the_cluster_are_named_and_fail_the_conversion(config):
    ns = config.ns
    bgp = "metallb.io/v1beta2"
    config.apply([
        metallb.pool(config.name("pool"), ns, ["203.0.113.32/29"]),
        {"apiVersion": bgp, "kind": "BGPPeer", "metadata": {"name": "router", "namespace": ns},
         "spec": {"myASN": 64500, "peerASN": 64501, "peerAddress": "192.0.2.254"}},
        {"apiVersion": metallb.API_VERSION, "kind": "BGPAdvertisement", "metadata": {"name": "bgp", "namespace": ns},
         "spec": {"ipAddressPools": [config.name("pool")]}},
        {"apiVersion": metallb.API_VERSION, "kind": "BFDProfile", "metadata": {"name": "fast", "namespace": ns},
         "spec": {"receiveInterval": 50}},
        {"apiVersion": metallb.API_VERSION, "kind": "Community", "metadata": {"name": "c", "namespace": ns},
         "spec": {"communities": [{"name": "no-export", "value": "65535:65281"}]}},
    ])
    res = config.migrate()
    assert (res.returncode, res.stdout) == (migrate.EXIT_UNTRANSLATED, "")
    for what in ("BGPPeer", "BGPAdvertisement", "BFDProfile", "Community"):
        assert any(line.split()[1:2] == [what] and "not translated" in line for line in res.stderr.splitlines()), \
            (what, res.stderr)
    assert "MetalLB advertises it over BGP" in res.stderr

    allowed = config.migrate("--allow-untranslated", "-o", "json")
    assert allowed.returncode == migrate.EXIT_OK, allowed.stderr
    assert [o["metadata"]["name"] for o in yaml.safe_load(allowed.stdout)["items"]] == [config.name("pool")]


def test_a_namespace_without_metallb_objects_is_an_error(config):
    res = config.migrate()
    assert (res.returncode, res.stdout) == (migrate.EXIT_UNREADABLE, "")
    assert f"no MetalLB object in namespace {config.ns}" in res.stderr
