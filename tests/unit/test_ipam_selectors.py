"""Label selectors, serviceAllocation and the ranking of candidate pools."""

from __future__ import annotations

import copy
import pickle

import pytest

from leifur.ipam.pool import PoolError, parse_pool
from leifur.ipam.selectors import (
    ServiceAllocation,
    candidate_pools,
    parse_service_allocation,
    selector_matches,
    validate_label_selector,
)

LABELS = {"app": "web", "tier": "front", "example.com/team": "blue"}


@pytest.mark.parametrize(("selector", "matches"), [
    ({}, True),
    ({"matchLabels": {}}, True),
    ({"matchLabels": {"app": "web"}}, True),
    ({"matchLabels": {"app": "web", "tier": "back"}}, False),
    ({"matchLabels": {"missing": "x"}}, False),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]}, True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}, False),
    ({"matchExpressions": [{"key": "missing", "operator": "In", "values": ["x"]}]}, False),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}, True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, False),
    ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]}, True),
    ({"matchExpressions": [{"key": "example.com/team", "operator": "Exists"}]}, True),
    ({"matchExpressions": [{"key": "missing", "operator": "Exists"}]}, False),
    ({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}, True),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist", "values": []}]}, False),
    ({"matchLabels": {"app": "web"},
      "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]}, False),
    ({"matchLabels": {"app": "web"},
      "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]},
                           {"key": "x", "operator": "DoesNotExist"}]}, True),
])
def test_selector_semantics(selector, matches):
    validate_label_selector(selector)
    assert selector_matches(selector, LABELS) is matches


def test_empty_selector_matches_no_labels_too():
    assert selector_matches({}, {})
    assert not selector_matches({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {})


def test_unknown_operator_selects_nothing_when_unvalidated():
    assert not selector_matches({"matchExpressions": [{"key": "app", "operator": "Like", "values": ["w"]}]}, LABELS)


@pytest.mark.parametrize(("selector", "fragment"), [
    ("app=web", "must be an object"),
    ({"matchLabel": {"app": "web"}}, "unknown field 'matchLabel'"),
    ({"matchLabels": ["app"]}, "matchLabels must be a map"),
    ({"matchLabels": {"app": True}}, "must be a string"),
    ({"matchLabels": {"": "x"}}, "non-empty"),
    ({"matchLabels": {"-app": "x"}}, "label key '-app' is invalid"),
    ({"matchLabels": {"Bad_Prefix/app": "x"}}, "invalid prefix"),
    ({"matchLabels": {"app": "a" * 64}}, "is invalid"),
    ({"matchExpressions": {"key": "app"}}, "matchExpressions must be a list"),
    ({"matchExpressions": ["app"]}, "matchExpressions[0] must be an object"),
    ({"matchExpressions": [{"key": "app", "operator": "in", "values": ["x"]}]}, "operator 'in' is not one of"),
    ({"matchExpressions": [{"key": "app", "operator": "In"}]}, "operator In needs at least one value"),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": []}]}, "NotIn needs at least one value"),
    ({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}, "Exists takes no values"),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist", "values": ["x"]}]}, "takes no values"),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": "x"}]}, "values must be a list"),
    ({"matchExpressions": [{"operator": "Exists"}]}, "label key None"),
])
def test_malformed_selectors(selector, fragment):
    with pytest.raises(PoolError) as err:
        validate_label_selector(selector)
    assert fragment in str(err.value)


def test_all_selector_problems_are_reported_together():
    with pytest.raises(PoolError) as err:
        validate_label_selector({"matchLabels": {"a": 1},
                                 "matchExpressions": [{"key": "b", "operator": "In"}, {"key": "c", "operator": "X"}]})
    assert len(err.value.problems) == 3


def test_selects_by_namespace_list_or_namespace_selector():
    alloc = ServiceAllocation(namespaces=frozenset({"prod"}),
                              namespace_selectors=({"matchLabels": {"env": "staging"}},))
    assert alloc.selects("prod", {}, {})
    assert alloc.selects("other", {"env": "staging"}, {})
    assert not alloc.selects("other", {"env": "dev"}, {"app": "web"})


def test_selects_by_service_selector_any_of():
    alloc = ServiceAllocation(service_selectors=({"matchLabels": {"app": "web"}},
                                                 {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}))
    assert alloc.selects("any", {}, {"app": "web"})
    assert alloc.selects("any", {}, {"tier": "x"})
    assert not alloc.selects("any", {}, {"app": "db"})


def test_namespace_and_service_terms_must_both_hold():
    alloc = ServiceAllocation(namespaces=["prod"], service_selectors=[{"matchLabels": {"app": "web"}}])
    assert alloc.selects("prod", {}, {"app": "web"})
    assert not alloc.selects("prod", {}, {"app": "db"})
    assert not alloc.selects("dev", {}, {"app": "web"})


def test_allocation_without_terms_selects_everything():
    assert ServiceAllocation(priority=3).selects("any", {}, {})


def test_service_allocation_is_hashable_and_equal_to_its_dicts():
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}
    a = ServiceAllocation(priority=1, namespaces=["x"], service_selectors=[selector])
    b = ServiceAllocation(priority=1, namespaces=frozenset({"x"}), service_selectors=(copy.deepcopy(selector),))
    assert a == b and hash(a) == hash(b)
    assert a.service_selectors[0] == selector  # still compares equal to the plain dict
    assert isinstance(a.service_selectors[0], dict)
    selector["matchExpressions"][0]["values"].append("db")  # the caller's dict changing does not leak in
    assert a == b
    with pytest.raises(TypeError):
        a.service_selectors[0]["matchLabels"] = {}
    with pytest.raises(TypeError):
        a.service_selectors[0]["matchExpressions"][0]["values"].append("db")
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.deepcopy(a) == a
    pool = parse_pool("p", {"addresses": ["192.0.2.1"], "serviceAllocation": {"serviceSelectors": [selector]}})
    assert len({pool, parse_pool("p", {"addresses": ["192.0.2.1"],
                                       "serviceAllocation": {"serviceSelectors": [selector]}})}) == 1


def test_service_allocation_validates_on_construction():
    with pytest.raises(PoolError, match="priority"):
        ServiceAllocation(priority=True)  # type: ignore[arg-type]
    with pytest.raises(PoolError, match="the string 'prod'"):
        ServiceAllocation(namespaces="prod")  # type: ignore[arg-type]
    with pytest.raises(PoolError, match="operator"):
        ServiceAllocation(service_selectors=({"matchExpressions": [{"key": "a", "operator": "Maybe"}]},))


def test_parse_service_allocation_camel_case():
    alloc = parse_service_allocation({"priority": 2, "namespaces": ["a", "b"],
                                      "namespaceSelectors": [{"matchLabels": {"x": "y"}}],
                                      "serviceSelectors": None})
    assert alloc.priority == 2 and alloc.namespaces == {"a", "b"}
    assert alloc.namespace_selectors == ({"matchLabels": {"x": "y"}},) and alloc.service_selectors == ()
    with pytest.raises(PoolError) as err:
        parse_service_allocation({"namespaces": [""], "serviceSelectors": [{"matchLabels": "app"}]})
    assert len(err.value.problems) == 2


def _pool(name, priority=None, auto_assign=True, **allocation):
    spec = {"addresses": ["192.0.2.1"], "autoAssign": auto_assign}
    if priority is not None or allocation:
        spec["serviceAllocation"] = {"priority": priority, **allocation}
    return parse_pool(name, spec)


def test_candidate_pools_ordering():
    pools = [
        _pool("zz-general"),
        _pool("aa-general"),
        _pool("low", priority=50),
        _pool("high", priority=1),
        _pool("high-b", priority=1),
        _pool("unprioritised", namespaces=["web"]),
        _pool("other-namespace", priority=0, namespaces=["db"]),
        _pool("manual", auto_assign=False),
        _pool("by-label", priority=10, namespaceSelectors=[{"matchLabels": {"team": "blue"}}],
              serviceSelectors=[{"matchExpressions": [{"key": "app", "operator": "In", "values": ["shop"]}]}]),
    ]
    names = [p.name for p in candidate_pools(pools, "web", {"team": "blue"}, {"app": "shop"})]
    assert names == ["high", "high-b", "by-label", "low", "unprioritised", "aa-general", "zz-general"]
    names = [p.name for p in candidate_pools(pools, "web", {"team": "red"}, {"app": "shop"})]
    assert names == ["high", "high-b", "low", "unprioritised", "aa-general", "zz-general"]
    names = [p.name for p in candidate_pools(pools, "db", {}, {})]
    assert names == ["other-namespace", "high", "high-b", "low", "aa-general", "zz-general"]


def test_requested_pool_is_honoured_alone():
    pools = [_pool("manual", auto_assign=False), _pool("reserved", priority=1, namespaces=["db"]), _pool("general")]
    assert [p.name for p in candidate_pools(pools, "web", {}, {}, requested_pool="manual")] == ["manual"]
    # A requested pool wins over its own serviceAllocation, as in MetalLB.
    assert [p.name for p in candidate_pools(pools, "web", {}, {}, requested_pool="reserved")] == ["reserved"]
    assert candidate_pools(pools, "web", {}, {}, requested_pool="missing") == []


def test_no_auto_assign_pools_means_no_candidates():
    assert candidate_pools([_pool("manual", auto_assign=False)], "web", {}, {}) == []
    assert candidate_pools(iter([_pool("a")]), "web", {}, {})[0].name == "a"  # any iterable will do
