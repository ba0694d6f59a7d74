"""leifur-controller against the real API server: allocation, requests, dual stack, sharing,
pool choice, ownership, pool status and protection, bad input."""

from __future__ import annotations

import ipaddress
import json

import pytest
from kubernetes.client.rest import ApiException

from leifur.model import names
from leifur_dev import promtool
from leifur_dev.cluster import wait_for

pytestmark = pytest.mark.controlplane


def test_service_gets_an_ip_and_releases_it_on_delete(env):
    env.controller()
    pool = env.pool("a", ["203.0.113.0/30"])
    env.svc("web")
    ip = env.wait_ips("web")[0]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("203.0.113.0/30")
    svc = env.cluster.service(env.ns, "web")
    assert names.SERVICE_FINALIZER in svc["metadata"]["finalizers"]
    assert svc["metadata"]["annotations"][names.ANN_ALLOCATED_FROM_POOL] == pool
    cond = env.wait_condition("web", "True", "Allocated")
    assert ip in cond["message"]
    assert wait_for(lambda: env.cluster.has_event(env.ns, "web", "IPAllocated"), what="IPAllocated event")

    # Fill the pool, then free one IP by deleting its Service: the next Service gets exactly it.
    for i in range(3):
        env.svc(f"s{i}")
    held = {name: env.wait_ips(name)[0] for name in ("s0", "s1", "s2")}
    assert len({ip, *held.values()}) == 4
    env.svc("late")
    env.wait_condition("late", "False", "Exhausted")
    env.cluster.delete_service(env.ns, "s1")
    wait_for(lambda: not env.cluster.service_exists(env.ns, "s1"), what="s1 finalizer removed")
    assert env.wait_ips("late") == [held["s1"]]


def test_requested_ips_outside_pools_or_taken_are_refused_without_disturbing_others(env):
    env.controller()
    env.pool("a", ["203.0.113.16/29"])
    env.svc("owner", annotations={names.ANN_LOAD_BALANCER_IPS: "203.0.113.20"})
    assert env.wait_ips("owner") == ["203.0.113.20"]

    env.svc("outside", annotations={names.ANN_LOAD_BALANCER_IPS: "198.51.100.77"})
    cond = env.wait_condition("outside", "False")
    assert cond["reason"] == "NotInPool" and "198.51.100.77" in cond["message"]
    assert env.ips("outside") == []
    ev = wait_for(lambda: env.cluster.has_event(env.ns, "outside", "AllocationFailed"), what="warning event")
    assert ev["type"] == "Warning"

    env.svc("thief", loadBalancerIP="203.0.113.20")
    cond = env.wait_condition("thief", "False", "Taken")
    assert f"{env.ns}/owner" in cond["message"]
    assert env.ips("thief") == []

    env.svc("both", loadBalancerIP="203.0.113.21", annotations={names.ANN_LOAD_BALANCER_IPS: "203.0.113.21"})
    cond = env.wait_condition("both", "False", "InvalidRequest")
    assert "loadBalancerIP" in cond["message"]

    env.svc("garbage", annotations={names.ANN_LOAD_BALANCER_IPS: "not-an-ip"})
    env.wait_condition("garbage", "False", "InvalidRequest")

    # Nobody else was disturbed, and a well-formed Service still gets an IP.
    assert env.ips("owner") == ["203.0.113.20"]
    env.svc("fine")
    assert env.wait_ips("fine")[0] != "203.0.113.20"


def test_dual_stack_policies(env):
    env.controller()
    env.pool("v4", ["203.0.113.32/29"])
    env.svc("single6", ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")
    env.svc("require", ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack")
    env.svc("prefer", ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="PreferDualStack")
    env.wait_condition("single6", "False", "FamilyUnavailable")
    env.wait_condition("require", "False")
    assert env.ips("require") == []  # both or nothing
    prefer = env.wait_ips("prefer")
    assert ipaddress.ip_address(prefer[0]).version == 4

    env.pool("v6", ["2001:db8:33::/120"])
    assert ipaddress.ip_address(env.wait_ips("single6")[0]).version == 6
    got = env.wait_ips("require", 2)
    assert [ipaddress.ip_address(i).version for i in got] == [4, 6]
    # PreferDualStack keeps its IPv4 address and adds the missing family.
    later = env.wait_ips("prefer", 2)
    assert later[0] == prefer[0] and ipaddress.ip_address(later[1]).version == 6


def test_sharing_needs_same_key_disjoint_ports_and_compatible_policy(env):
    env.controller()
    env.pool("a", ["203.0.113.48/29"])
    share = {names.ANN_ALLOW_SHARED_IP: "k1"}
    env.svc("dns-tcp", ports=(53,), protocol="TCP", annotations=share)
    ip = env.wait_ips("dns-tcp")[0]
    env.svc("dns-udp", ports=(53,), protocol="UDP", annotations=share, loadBalancerIP=ip)
    assert env.wait_ips("dns-udp") == [ip]
    # Same key but the port overlaps: may not share.
    env.svc("clash", ports=(53,), protocol="UDP", annotations=share, loadBalancerIP=ip)
    cond = env.wait_condition("clash", "False", "Taken")
    assert "53/UDP" in cond["message"]
    # Same key, free port, but Local policy against Cluster: may not share.
    env.svc("local", ports=(8080,), annotations=share, externalTrafficPolicy="Local", loadBalancerIP=ip)
    env.wait_condition("local", "False", "Taken")
    # Without a requested IP, a Service with the same key and free ports joins the shared IP.
    env.svc("joiner", ports=(443,), annotations=share)
    assert env.wait_ips("joiner") == [ip]
    # A different key never shares.
    env.svc("other", ports=(9999,), annotations={names.ANN_ALLOW_SHARED_IP: "k2"})
    assert env.wait_ips("other") != [ip]


def test_pool_choice_by_annotation_priority_and_selectors(env):
    env.controller()
    cluster = env.cluster
    cluster.core.patch_namespace(env.ns, {"metadata": {"labels": {"team": "blue"}}})
    env.pool("general", ["203.0.113.64/29"])
    blue = env.pool("blue", ["203.0.113.72/29"], serviceAllocation={
        "priority": 10, "namespaceSelectors": [{"matchLabels": {"team": "blue"}}]})
    gold_selector = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}
    gold = env.pool("gold", ["203.0.113.80/29"], serviceAllocation={"priority": 1, "serviceSelectors": [gold_selector]})
    manual = env.pool("manual", ["203.0.113.88/29"], autoAssign=False)
    # The controller must know every pool before the Services come: a Service allocated while a
    # pool is still on its way keeps the IP it got (no renumbering), which is not what this tests.
    for pool in (env.ns + "-general", blue, gold, manual):
        wait_for(lambda p=pool: cluster.pool_condition(p, names.COND_POOL_VALID), what=f"{pool} seen")

    env.svc("plain")
    env.svc("golden", labels={"tier": "gold"})
    env.svc("picked", annotations={names.ANN_ADDRESS_POOL: manual})
    env.svc("missing", annotations={names.ANN_ADDRESS_POOL: "no-such-pool"})

    def pool_of(name):
        return env.cluster.service(env.ns, name)["metadata"]["annotations"].get(names.ANN_ALLOCATED_FROM_POOL)

    env.wait_ips("plain")
    assert pool_of("plain") == blue  # the namespace selector matches; it beats unselective pools
    env.wait_ips("golden")
    assert pool_of("golden") == gold  # priority 1 beats 10
    env.wait_ips("picked")
    assert pool_of("picked") == manual  # autoAssign: false, but named
    env.wait_condition("missing", "False")
    assert env.ips("missing") == []


def test_services_that_are_not_ours_are_left_alone_and_released_when_they_leave(env):
    env.controller()
    env.pool("a", ["203.0.113.96/29"])
    env.svc("foreign", loadBalancerClass="example.com/other")
    env.svc("mine")
    ip = env.wait_ips("mine")[0]
    env.cluster.patch_service(env.ns, "mine", {"spec": {"type": "ClusterIP"}})

    def released():
        svc = env.cluster.service(env.ns, "mine")
        return names.SERVICE_FINALIZER not in (svc["metadata"].get("finalizers") or []) and not env.ips("mine")

    wait_for(released, what="type change releases IP and finalizer")
    svc = env.cluster.service(env.ns, "mine")
    assert names.ANN_ALLOCATED_FROM_POOL not in (svc["metadata"].get("annotations") or {})
    # The released IP is free again.
    env.svc("next", loadBalancerIP=ip)
    assert env.wait_ips("next") == [ip]
    foreign = env.cluster.service(env.ns, "foreign")
    assert not env.ips("foreign") and not foreign["metadata"].get("finalizers")


def test_load_balancer_class_flag_handles_exactly_that_class(env):
    env.controller("--load-balancer-class", "leifur.io/lb")
    env.pool("a", ["203.0.113.104/29"])
    # The one to leave alone comes first: by the time the later ones have their IPs, the controller
    # has seen it (one informer, events in order), so its absence of an IP says something.
    env.svc("unclassed")
    env.svc("classed", loadBalancerClass="leifur.io/lb")
    env.svc("classed-later", loadBalancerClass="leifur.io/lb")
    env.wait_ips("classed")
    env.wait_ips("classed-later")
    assert not env.ips("unclassed")
    assert not env.cluster.service(env.ns, "unclassed")["metadata"].get("finalizers")


def test_pool_status_protection_and_shrinking(env):
    env.controller()
    pool = env.pool("a", ["203.0.113.112/29", "2001:db8:70::/64"], avoidBuggyIPs=True)
    env.svc("one", annotations={names.ANN_LOAD_BALANCER_IPS: "203.0.113.119"})
    env.wait_ips("one")

    def usage():
        st = env.cluster.pool(pool).get("status") or {}
        return st if st.get("ipv4", {}).get("inUse") == 1 else None

    st = wait_for(usage, what="pool status")
    assert st["ipv4"] == {"total": 8, "inUse": 1, "available": 7}
    assert st["ipv6"]["total"] == str(2**64) and st["ipv6"]["inUse"] == 0
    assert env.cluster.pool_condition(pool, "Valid")["status"] == "True"
    assert names.POOL_FINALIZER in env.cluster.pool(pool)["metadata"]["finalizers"]

    # Shrinking under a live allocation: the Service keeps its IP and the pool says so.
    env.cluster.patch_pool(pool, {"addresses": ["203.0.113.112/30", "2001:db8:70::/64"]})
    wait_for(lambda: (c := env.cluster.pool_condition(pool, "ServicesOutside")) and c["status"] == "True"
             and f"{env.ns}/one" in c["message"], what="ServicesOutside condition")
    assert env.ips("one") == ["203.0.113.119"]

    # Deleting a pool in use is held until the last Service lets go.
    env.cluster.patch_pool(pool, {"addresses": ["203.0.113.112/29"]})
    env.cluster.delete_pool(pool)
    wait_for(lambda: env.cluster.has_event("default", pool, "DeletionBlocked", kind="IPAddressPool"),
             what="DeletionBlocked event")
    assert env.cluster.pool_exists(pool) and env.ips("one") == ["203.0.113.119"]
    env.cluster.delete_service(env.ns, "one")
    wait_for(lambda: not env.cluster.pool_exists(pool), what="pool deleted after its last Service")


def test_bad_pools_are_reported_and_do_not_disturb_other_services(env):
    env.controller()
    good = env.pool("good", ["203.0.113.128/29"])
    env.svc("steady")
    ip = env.wait_ips("steady")[0]
    # The API server refuses most bad pools (CEL: test_crds.py); it cannot order IPv6 ends.
    bad = env.pool("reversed", ["2001:db8:e0::ffff-2001:db8:e0::1"])
    overlap = env.pool("overlap", ["203.0.113.130-203.0.113.131"])

    cond = wait_for(lambda: (c := env.cluster.pool_condition(bad, "Valid")) and c["status"] == "False" and c,
                    what="Valid=False on the bad pool")
    assert "did you mean 2001:db8:e0::1-2001:db8:e0::ffff?" in cond["message"]  # the range it probably meant
    wait_for(lambda: env.cluster.has_event("default", bad, "InvalidSpec", kind="IPAddressPool"), what="event")
    for name, other in ((good, overlap), (overlap, good)):
        c = wait_for(lambda n=name: (c := env.cluster.pool_condition(n, "Overlapping")) and c["status"] == "True"
                     and c, what=f"Overlapping on {name}")
        assert other in c["message"]
    assert env.ips("steady") == [ip]
    env.svc("after")
    assert env.wait_ips("after") != [ip]


def test_an_overlapping_pool_can_be_deleted_while_another_pool_covers_its_addresses(env):
    """Regression (chaos soak): deleting a pool that overlaps another was blocked for as long as any
    Service held an address in the overlap, though the other pool still contained it."""
    env.controller()
    lan = env.pool("z-lan", ["203.0.113.160/29"])
    env.svc("kept")
    ip = env.wait_ips("kept")[0]
    dup = env.pool("a-dup", [f"{ip}-{ip}"])
    wait_for(lambda: (c := env.cluster.pool_condition(dup, "Overlapping")) and c["status"] == "True",
             what="Overlapping on the duplicate")
    env.cluster.delete_pool(dup)
    wait_for(lambda: not env.cluster.pool_exists(dup), what="the duplicate pool deleted")
    assert env.ips("kept") == [ip]
    ann = env.cluster.service(env.ns, "kept")["metadata"]["annotations"]
    assert ann[names.ANN_ALLOCATED_FROM_POOL] == lan


def test_metrics_and_health_endpoints(env):
    c = env.controller()
    pool = env.pool("a", ["203.0.113.144/29"])
    env.svc("web")
    env.wait_ips("web")
    assert c.get("/healthz")[0] == 200 and c.get("/readyz")[0] == 200
    in_use = f'leifur_pool_addresses_in_use{{family="ipv4",pool="{pool}"}} 1.0'
    body = wait_for(lambda: (b := c.get("/metrics")[1]) and in_use in b and b, what="pool metrics")
    assert f'leifur_pool_addresses_usable{{family="ipv4",pool="{pool}"}} 8.0' in body
    for metric in ("leifur_allocations_total", "leifur_workqueue_depth", "leifur_reconcile_duration_seconds",
                   "leifur_controller_is_leader 1.0"):
        assert metric in body, metric
    # Prometheus's conventions, as its own linter reads them (names, suffixes, HELP, TYPE).
    assert promtool.check_metrics(body) == []


def test_log_lines_are_found_by_their_service_field(env):
    c = env.controller()
    pool = env.pool("a", ["203.0.113.136/29"])
    env.svc("web")
    env.svc("other")
    ip = env.wait_ips("web")[0]
    env.wait_ips("other")
    env.cluster.delete_service(env.ns, "web")

    def web_lines() -> list[dict]:
        # What a log collector does with the JSON lines: parse each, select on a field.
        lines = [json.loads(line) for line in c.log_path.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("service") == f"{env.ns}/web"]

    lines = wait_for(lambda: (got := web_lines()) and any("let go" in x["msg"] for x in got) and got,
                     what="web's release in the log")
    assigned = next(x for x in lines if "assigned" in x["msg"])
    assert assigned["ip"] == ip and assigned["pool"] == pool and assigned["level"] == "info"
    released = next(x for x in lines if "let go" in x["msg"])
    assert released["ip"] == ip
    assert all("other" not in x["msg"] for x in lines)


def test_an_ip_freed_by_a_pool_move_goes_to_the_waiting_service(env):
    env.controller()
    small = env.pool("small", ["203.0.113.152"])
    other = env.pool("other", ["203.0.113.153"])
    env.svc("first", annotations={names.ANN_ADDRESS_POOL: small})
    assert env.wait_ips("first") == ["203.0.113.152"]
    env.svc("waiting", annotations={names.ANN_ADDRESS_POOL: small})
    env.wait_condition("waiting", "False", "Exhausted")
    env.cluster.patch_service(env.ns, "first", {"metadata": {"annotations": {names.ANN_ADDRESS_POOL: other}}})
    wait_for(lambda: env.ips("first") == ["203.0.113.153"], what="first moves to the other pool")
    assert env.wait_ips("waiting") == ["203.0.113.152"]


def test_bad_input_on_a_sharing_service_does_not_keep_an_incompatible_share(env):
    env.controller()
    env.pool("share", ["203.0.113.154/31"])
    share = {names.ANN_ALLOW_SHARED_IP: "k"}
    env.svc("a", ports=(80,), annotations=share)
    ip = env.wait_ips("a")[0]
    env.svc("b", ports=(443,), annotations=share)
    assert env.wait_ips("b") == [ip]
    # a now overlaps b's port AND carries an invalid request: it must not keep sharing b's IP.
    env.cluster.patch_service(env.ns, "a", {
        "spec": {"ports": [{"name": "p443", "port": 443, "protocol": "TCP"}], "loadBalancerIP": ip},
        "metadata": {"annotations": {names.ANN_LOAD_BALANCER_IPS: ip}}})
    env.wait_condition("a", "False", "InvalidRequest")
    wait_for(lambda: env.ips("a") == [], what="a gives up the shared IP")
    assert env.ips("b") == [ip]


def test_the_crd_schema_rejects_what_a_schema_can(cluster):
    with pytest.raises(ApiException) as e:
        cluster.create_pool("schema-bad", ["not-an-ip", "192.0.2.1-x"], serviceAllocation={"priority": -1})
    assert e.value.status == 422
    for fragment in ("spec.addresses[0]", "spec.addresses[1]", "must be an IP address, a CIDR, or a range",
                     "spec.serviceAllocation.priority"):
        assert fragment in e.value.body
    with pytest.raises(ApiException) as empty:
        cluster.create_pool("schema-empty", [])
    assert empty.value.status == 422


def test_an_address_conflict_an_agent_records_shows_on_the_service_until_it_is_gone(env):
    """The agent cannot write Services: it reports in its L2NodeStatus, and the controller turns
    that into the leifur.io/AddressConflict condition, removed once no record lists it."""
    env.controller()
    env.pool("a", ["203.0.113.0/30"])
    env.svc("web")
    ip = env.wait_ips("web")[0]
    key = f"{env.ns}/web"
    node = f"{env.ns}-node"
    custom = env.cluster.custom
    record = {"apiVersion": names.API_VERSION, "kind": "L2NodeStatus", "metadata": {"name": node},
              "status": {"count": 0, "ips": "", "announcements": [], "conflicts": [
                  {"ip": ip, "mac": "02:00:00:00:00:3e", "interface": "eth0", "kind": "InUse",
                   "since": "2026-01-01T00:00:00Z", "services": [key]}]}}
    custom.create_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES, record)
    try:
        def conflict() -> dict | None:
            conds = (env.cluster.service(env.ns, "web").get("status") or {}).get("conditions") or []
            return next((c for c in conds if c["type"] == names.COND_ADDRESS_CONFLICT), None)

        cond = wait_for(conflict, what="the AddressConflict condition")
        assert cond["status"] == "True" and cond["reason"] == names.REASON_ADDRESS_IN_USE
        assert ip in cond["message"] and "02:00:00:00:00:3e" in cond["message"] and node in cond["message"]
        assert env.ips("web") == [ip], "a conflict changes no allocation"
        custom.patch_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES, node,
                                           {"status": {"conflicts": []}})
        wait_for(lambda: conflict() is None, what="the AddressConflict condition removed")
    finally:
        custom.delete_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES, node)
