"""Bad input at every entrance, generated: random pool specs, Service objects and annotations
never make the controller's or the agent's decision code fail with anything but the errors
they report on the object (PoolError, ServiceSpecError)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leifur.announce import plan
from leifur.ipam.errors import PoolError
from leifur.ipam.pool import parse_pool
from leifur.model import names, service

# Strings that look almost like addresses, and JSON-like values.
near_ips = st.sampled_from(["192.0.2.1", "192.0.2.0/24", "192.0.2.1/24", "2001:db8::/64", "2001:db8::1-2001:db8::",
                            "192.0.2.9-192.0.2.1", "::", "0.0.0.0/0", "300.1.1.1", "192.0.2.1,2001:db8::1",
                            "1.2.3.4/33", " 192.0.2.1 ", "", "\x00", "a-b", "192.0.2.1-", "ff02::1/128"])
texts = st.one_of(near_ips, st.text(max_size=20))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)

# Pool specs of any shape: parse_pool is the last line behind the CRD's schema.
pool_specs = st.fixed_dictionaries({}, optional={
    "addresses": st.one_of(st.lists(st.one_of(near_ips, values), max_size=4), values),
    "autoAssign": values, "avoidBuggyIPs": values, "priority": values, "serviceAllocation": values,
})

# Service fields have the types the API's schema enforces; their contents are anything.
ports = st.lists(st.fixed_dictionaries({"port": st.integers(-5, 70000)}, optional={
    "protocol": st.sampled_from(["TCP", "UDP", "SCTP", "tcp", ""]), "name": texts}), max_size=4)
specs = st.fixed_dictionaries({"type": st.sampled_from(["LoadBalancer", "ClusterIP", None])}, optional={
    "ports": ports, "externalTrafficPolicy": st.one_of(st.sampled_from(["Local", "Cluster"]), texts),
    "ipFamilies": st.lists(st.one_of(st.sampled_from(["IPv4", "IPv6"]), texts), max_size=3),
    "ipFamilyPolicy": st.one_of(st.sampled_from(["SingleStack", "PreferDualStack", "RequireDualStack"]), texts),
    "loadBalancerIP": texts, "selector": st.dictionaries(texts, texts, max_size=3), "loadBalancerClass": texts,
})
annotations = st.dictionaries(st.sampled_from([names.ANN_LOAD_BALANCER_IPS, names.ANN_ADDRESS_POOL,
                                               names.ANN_ALLOW_SHARED_IP, names.ANN_ALLOCATED_FROM_POOL]),
                              texts, max_size=4)
statuses = st.fixed_dictionaries({"loadBalancer": st.fixed_dictionaries({"ingress": st.lists(
    st.fixed_dictionaries({}, optional={"ip": texts, "hostname": texts}), max_size=3)})})


def make_service(name: str, spec: dict, ann: dict, status: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "ns", "annotations": ann},
            "spec": {k: v for k, v in spec.items() if v is not None}, "status": status}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(pool_specs)
def test_random_pool_specs_parse_or_raise_pool_error(spec):
    try:
        parse_pool("p", spec)
    except PoolError as e:
        assert str(e)  # a message the user can act on


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(specs, annotations, statuses)
def test_random_services_parse_or_raise_service_spec_error(spec, ann, status):
    try:
        service.parse(make_service("s", spec, ann, status))
    except service.ServiceSpecError as e:
        assert str(e)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(specs, annotations, statuses), max_size=4), st.lists(pool_specs, max_size=3),
       st.lists(values, max_size=3))
def test_the_agents_decision_never_fails_on_random_objects(services, pools, slices):
    svcs = [make_service(f"s{i}", *parts) for i, parts in enumerate(services)]
    pool_objs = [{"metadata": {"name": f"p{i}"}, "spec": spec} for i, spec in enumerate(pools)]
    slice_objs = [s if isinstance(s, dict) else {"junk": s} for s in slices]
    cluster = plan.Cluster(svcs, slice_objs, [{"metadata": {"name": "n1"}}], pool_objs,
                           [{"metadata": {"name": "all"}, "spec": {}}])
    for d in plan.decide_announcements(cluster, {"n1"}).values():
        assert d.announcement is not None or d.reason
