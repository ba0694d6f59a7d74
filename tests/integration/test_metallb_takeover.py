"""Leifur's controller takes over from the real MetalLB controller (v0.15, built from its Go module)
without renumbering a single Service: MetalLB numbers them, stops, its configuration is converted
(`leifurctl migrate from-metallb`, applied with kubectl), and Leifur's controller adopts every IP,
also when it is killed halfway through the adoption."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur_dev import gobuild, metallb
from leifur_dev.cluster import wait_for

pytestmark = pytest.mark.controlplane

# The pools, as an operator would have configured MetalLB (name suffixes added per test).
HI_V4 = "203.0.113.192/28"
WEB_V4, WEB_V6 = "198.51.100.192/28", "2001:db8:4d4c:1::/120"
GEN_V4, GEN_V6 = "192.0.2.192/27", "2001:db8:4d4c:2::/120"
MANUAL_V4, MANUAL_V6 = "203.0.113.240/29", "2001:db8:4d4c:3::/120"
DUAL = {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"}
REQUIRE = {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}
V6 = {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}


class Watch(threading.Thread):
    """Every Service's IPs, read every 100 ms until stopped: each distinct value seen, per Service."""

    def __init__(self, cluster, namespaces: list[str]) -> None:
        super().__init__(daemon=True)
        self.cluster, self.namespaces = cluster, namespaces
        self.seen: dict[str, set[tuple[str, ...]]] = {}
        self.rounds = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            for ns in self.namespaces:
                for s in self.cluster.core.list_namespaced_service(ns).items:
                    ingress = (s.status.load_balancer.ingress or []) if s.status.load_balancer else []
                    self.seen.setdefault(f"{ns}/{s.metadata.name}", set()).add(tuple(sorted(i.ip for i in ingress)))
            self.rounds += 1

    def stop(self) -> None:
        self._done.set()
        self.join(10)


class HoldBack:
    """An admission policy that refuses our finalizer on the Services of one namespace: the
    controller adopts everything else and keeps retrying those, which is a restart halfway through
    an adoption, made certain rather than raced."""

    def __init__(self, api_client, namespace: str) -> None:
        self.api = client.AdmissionregistrationV1Api(api_client)
        self.name = f"hold-back-{namespace}"
        self.namespace = namespace

    def __enter__(self) -> HoldBack:
        self.api.create_validating_admission_policy({
            "metadata": {"name": self.name},
            "spec": {"failurePolicy": "Fail", "matchConstraints": {
                # Both: the controller puts its finalizer on with the status, through /status.
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                                   "resources": ["services", "services/status"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}},
                "validations": [{"expression": f"!has(object.metadata.finalizers) || "
                                 f"!object.metadata.finalizers.exists(f, f == '{names.SERVICE_FINALIZER}')",
                                 "message": "held back by the test"}]}})
        self.api.create_validating_admission_policy_binding({
            "metadata": {"name": self.name}, "spec": {"policyName": self.name, "validationActions": ["Deny"]}})
        return self

    def refuses(self, cluster, name: str) -> bool:
        """Whether the API server applies it yet (a dry run of the write it must refuse)."""
        try:
            cluster.core.patch_namespaced_service(
                name, self.namespace, {"metadata": {"finalizers": [names.SERVICE_FINALIZER]}}, dry_run="All")
        except ApiException as e:
            return e.status in (403, 422) and "held back by the test" in (e.body or "")
        return False

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(ApiException):
            self.api.delete_validating_admission_policy_binding(self.name)
        with contextlib.suppress(ApiException):
            self.api.delete_validating_admission_policy(self.name)


def test_every_service_metallb_numbered_keeps_its_ips_through_the_takeover(mlb, env, tmp_path):
    sfx = uuid.uuid4().hex[:6]
    ns_a, ns_b, ns_c = mlb.namespace("a", {"tier": "web"}), mlb.namespace("b", {"tier": "db"}), mlb.namespace("c")
    hi, web, gen, manual = (f"{p}-{sfx}" for p in ("hi", "web", "gen", "manual"))
    sources = [
        metallb.pool(hi, mlb.ns, [HI_V4], serviceAllocation={"priority": 10, "namespaces": [ns_a]}),
        metallb.pool(web, mlb.ns, [WEB_V4, WEB_V6], serviceAllocation={
            "priority": 20, "namespaceSelectors": [{"matchLabels": {"tier": "web"}}]}),
        metallb.pool(gen, mlb.ns, [GEN_V4, GEN_V6]),
        metallb.pool(manual, mlb.ns, [MANUAL_V4, MANUAL_V6], autoAssign=False),
        metallb.l2_advertisement(f"l2-{sfx}", mlb.ns),
    ]
    for body in sources:
        mlb.create(body)
    mlb.controller()

    def svc(ns: str, name: str, annotations: dict | None = None, ports: tuple[int, ...] = (80,), **spec) -> str:
        mlb.cluster.create_service(ns, name, ports=ports, annotations=annotations or {},
                                   loadBalancerClass=mlb.lb_class, **spec)
        return f"{ns}/{name}"

    keys = []
    for ns, prefix in ((ns_a, "a"), (ns_b, "b"), (ns_c, "c")):
        keys += [svc(ns, f"{prefix}-v4-{i}") for i in range(4)]
        keys += [svc(ns, f"{prefix}-v6-{i}", **V6) for i in range(2)]
        keys += [svc(ns, f"{prefix}-dual", **DUAL), svc(ns, f"{prefix}-require", **REQUIRE)]
    keys += [
        # Requested IPs and pools, in both of MetalLB's annotation prefixes. Requested IPs come from
        # the pool that is not auto-assigned: MetalLB may not hand them to another Service first.
        svc(ns_a, "req-new", {"metallb.io/loadBalancerIPs": "203.0.113.246"}),
        svc(ns_a, "req-old", {"metallb.universe.tf/loadBalancerIPs": "203.0.113.245,2001:db8:4d4c:3::45"}, **DUAL),
        svc(ns_b, "manual-new", {"metallb.io/address-pool": manual}),
        svc(ns_c, "manual-old", {"metallb.universe.tf/address-pool": manual}),
        # Shared IPs: a key of each prefix, ports apart.
        svc(ns_b, "share-1", {"metallb.io/allow-shared-ip": "k1", "metallb.io/loadBalancerIPs": "203.0.113.247"}),
        svc(ns_b, "share-2", {"metallb.io/allow-shared-ip": "k1", "metallb.io/loadBalancerIPs": "203.0.113.247"},
            ports=(443,)),
        svc(ns_c, "share-v6-1", {"metallb.universe.tf/allow-shared-ip": "k2",
                                 "metallb.universe.tf/loadBalancerIPs": "2001:db8:4d4c:3::50"}, **V6),
        svc(ns_c, "share-v6-2", {"metallb.universe.tf/allow-shared-ip": "k2",
                                 "metallb.universe.tf/loadBalancerIPs": "2001:db8:4d4c:3::50"}, ports=(8080,), **V6),
    ]
    assert len(keys) >= 30

    def ips(key: str) -> tuple[str, ...]:
        ns, name = key.split("/")
        return tuple(sorted(mlb.cluster.ips(ns, name)))

    def expected_count(key: str) -> int:
        spec = mlb.cluster.service(*key.split("/"))["spec"]
        return 2 if spec.get("ipFamilyPolicy") in ("PreferDualStack", "RequireDualStack") else 1

    def unnumbered() -> dict[str, tuple[str, ...]]:
        return {k: ips(k) for k in keys if len(ips(k)) != expected_count(k)}

    try:
        wait_for(lambda: not unnumbered(), 60, what="MetalLB numbered every Service")
    except TimeoutError:
        raise AssertionError(f"MetalLB left these as shown: {unnumbered()}; "
                             f"events: {[(k, mlb.cluster.events(*k.split('/'))) for k in unnumbered()][:3]}") from None
    before = {k: ips(k) for k in keys}
    # What MetalLB did is what this test means to take over: its priorities and selectors, shared IPs.
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(HI_V4) for k in keys if k.startswith(f"{ns_a}/a-v4")
               for ip in before[k])
    assert before[f"{ns_b}/share-1"] == before[f"{ns_b}/share-2"] == ("203.0.113.247",)
    assert before[f"{ns_c}/share-v6-1"] == before[f"{ns_c}/share-v6-2"]
    assert len({ip for k in keys for ip in before[k]}) == sum(len(v) for v in before.values()) - 2  # only those share

    kubeconfig = str(env.cp.kubeconfig)

    def leifurctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "leifur.cli.leifurctl", *args, "--kubeconfig", kubeconfig],
                              capture_output=True, text=True, timeout=60)

    # Converted and checked while MetalLB still serves, before anything of Leifur's is applied.
    converted = leifurctl("migrate", "from-metallb", "-n", mlb.ns)
    assert converted.returncode == 0, converted.stderr
    planned = tmp_path / "leifur-config.yaml"
    planned.write_text(converted.stdout)
    checked = leifurctl("migrate", "check", str(planned), "--load-balancer-class", mlb.lb_class, "-o", "json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {s["service"]: s["state"] for s in json.loads(checked.stdout)["services"]} == {k: "Keeps" for k in keys}

    # MetalLB's controller stops; a newcomer arrives while nobody numbers Services.
    for c in mlb.controllers:
        c.stop()
    newcomer = svc(ns_b, "newcomer")
    watch = Watch(mlb.cluster, [ns_a, ns_b, ns_c])
    watch.start()
    try:
        # The pools first (the advertisements are the switch of the announcers, not tested here).
        pools = leifurctl("migrate", "from-metallb", "-n", mlb.ns, "--kind", "IPAddressPool")
        assert pools.returncode == 0, pools.stderr
        objects = [o for o in yaml.safe_load_all(pools.stdout) if o]
        assert {o["kind"] for o in objects} == {"IPAddressPool"}
        env.pools += [o["metadata"]["name"] for o in objects]
        assert sorted(env.pools) == sorted([hi, web, gen, manual])
        applied = subprocess.run([str(gobuild.ensure_built("kubectl")), "--kubeconfig", kubeconfig, "apply",
                                  "--server-side", "-f", "-"], input=pools.stdout, capture_output=True,
                                 text=True, timeout=60)
        assert applied.returncode == 0, applied.stderr

        def adopted(ns: str) -> set[str]:
            return {f"{ns}/{o.metadata.name}" for o in mlb.cluster.core.list_namespaced_service(ns).items
                    if names.SERVICE_FINALIZER in (o.metadata.finalizers or [])}

        halfway = {k for k in keys if not k.startswith(f"{ns_c}/")}
        with HoldBack(mlb.cluster.api_client, ns_c) as hold:
            wait_for(lambda: hold.refuses(mlb.cluster, "c-v4-0"), 30, what="the policy in force")
            first = env.controller("--load-balancer-class", mlb.lb_class)
            wait_for(lambda: adopted(ns_a) | adopted(ns_b) >= halfway, 60, what="the first namespaces adopted")
            # Killed halfway: the next leader finds some Services adopted and the others not yet.
            first.kill()
            assert not adopted(ns_c)
        env.controller("--load-balancer-class", mlb.lb_class, identity="c2")
        wait_for(lambda: adopted(ns_a) | adopted(ns_b) | adopted(ns_c) >= set(keys), 60, what="every Service adopted")
        wait_for(lambda: len(ips(newcomer)) == 1, 30, what="the newcomer numbered")
        time.sleep(1)  # a second of the watch with everything adopted
        watch.stop()

        assert watch.rounds > 10
        moved = {k: sorted(seen) for k, seen in watch.seen.items() if k in before and seen != {before[k]}}
        assert not moved, f"Services whose IPs changed during the takeover (before: {before}): {moved}"
        assert {k: ips(k) for k in keys} == before
        (new_ip,) = ips(newcomer)
        assert new_ip not in {ip for v in before.values() for ip in v}
        for k in keys:
            obj = mlb.cluster.service(*k.split("/"))
            cond = next(c for c in obj["status"]["conditions"] if c["type"] == names.COND_SERVICE_ALLOCATED)
            assert cond["status"] == "True", (k, cond)
            assert obj["metadata"]["annotations"][names.ANN_ALLOCATED_FROM_POOL] in (hi, web, gen, manual), k
    finally:
        watch.stop()
        mlb.delete_services()  # while Leifur's controller runs, so that it lets go of them
