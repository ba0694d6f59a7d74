"""Which pools a Service may draw from: label selectors, a pool's serviceAllocation, and pool ranking."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leifur.ipam.errors import PoolError
from leifur.model.objects import Object

if TYPE_CHECKING:
    from leifur.ipam.pool import Pool

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_SELECTOR_FIELDS = ("matchLabels", "matchExpressions")

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_NAME_RE = re.compile(_NAME)
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _label_key_problem(key: Any) -> str | None:
    if not isinstance(key, str) or not key:
        return f"label key {key!r} must be a non-empty string"
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        return f"label key {key!r} has an invalid prefix (want a DNS subdomain such as example.com/)"
    if len(name) > 63 or not _NAME_RE.fullmatch(name):
        return (f"label key {key!r} is invalid (at most 63 characters: letters, digits, '-', '_', '.', "
                "starting and ending with a letter or digit)")
    return None


def _label_value_problem(key: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"label {key!r} value {value!r} must be a string (quote it in YAML)"
    if value and (len(value) > 63 or not _NAME_RE.fullmatch(value)):
        return (f"label {key!r} value {value!r} is invalid (at most 63 characters: letters, digits, '-', '_', '.', "
                "starting and ending with a letter or digit)")
    return None


def label_selector_problems(selector: Any, where: str = "selector") -> list[str]:
    """Every problem with a Kubernetes LabelSelector, each prefixed with `where`; empty when valid."""
    if not isinstance(selector, Mapping):
        return [f"{where} must be an object with matchLabels and/or matchExpressions, got {selector!r}"]
    problems = [f"{where}: unknown field {k!r} (a label selector has matchLabels and matchExpressions)"
                for k in selector if k not in _SELECTOR_FIELDS]
    labels = selector.get("matchLabels")
    if labels is not None:
        if not isinstance(labels, Mapping):
            problems.append(f"{where}.matchLabels must be a map of label to value, got {labels!r}")
        else:
            for key, value in labels.items():
                problem = _label_key_problem(key) or _label_value_problem(key, value)
                if problem:
                    problems.append(f"{where}.matchLabels: {problem}")
    expressions = selector.get("matchExpressions")
    if expressions is not None:
        if not isinstance(expressions, list | tuple):
            problems.append(f"{where}.matchExpressions must be a list, got {expressions!r}")
        else:
            for i, expr in enumerate(expressions):
                problems.extend(_expression_problems(expr, f"{where}.matchExpressions[{i}]"))
    return problems


def _expression_problems(expr: Any, where: str) -> list[str]:
    if not isinstance(expr, Mapping):
        return [f"{where} must be an object with key, operator and values, got {expr!r}"]
    problems = []
    key = expr.get("key")
    key_problem = _label_key_problem(key)
    if key_problem:
        problems.append(f"{where}: {key_problem}")
    operator = expr.get("operator")
    values = expr.get("values")
    if operator not in OPERATORS:
        problems.append(f"{where}: operator {operator!r} is not one of {', '.join(OPERATORS)}")
    if values is not None and not (isinstance(values, list | tuple) and all(isinstance(v, str) for v in values)):
        problems.append(f"{where}: values must be a list of strings, got {values!r}")
    elif operator in ("In", "NotIn") and not values:
        problems.append(f"{where}: operator {operator} needs at least one value")
    elif operator in ("Exists", "DoesNotExist") and values:
        problems.append(f"{where}: operator {operator} takes no values (remove 'values')")
    return problems


def validate_label_selector(selector: Object) -> None:
    """Raise PoolError listing everything wrong with a Kubernetes LabelSelector."""
    problems = label_selector_problems(selector)
    if problems:
        raise PoolError("; ".join(problems), problems)


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: all terms must hold; the empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or ()
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            ok = False  # an unvalidated, unknown operator selects nothing rather than everything
        if not ok:
            return False
    return True


def selects_by_name_or_labels(names: Collection[str], selectors: Iterable[Mapping[str, Any]], name: str,
                              labels: Mapping[str, str]) -> bool:
    """How an advertisement selects a pool: by name or by a label selector, and nothing named or
    given selects every one."""
    selectors = tuple(selectors)
    if not names and not selectors:
        return True
    return name in names or any(selector_matches(s, labels) for s in selectors)


def selects_by_labels(selectors: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> bool:
    """How an advertisement or a peer selects nodes: any of the selectors, and none selects every node."""
    selectors = tuple(selectors)
    return not selectors or any(selector_matches(s, labels) for s in selectors)


class _FrozenDict(dict[str, Any]):
    """A dict that cannot change and can be hashed, so frozen dataclasses holding selectors stay hashable.

    It is still a dict: equal to the plain dict it was made from, and readable by anything that reads dicts.
    """

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def _immutable(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a selector stored in a ServiceAllocation cannot be modified")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _immutable  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


class _FrozenList(list[Any]):
    """A list that cannot change and can be hashed; equal to the plain list it was made from."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))

    def _immutable(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a selector stored in a ServiceAllocation cannot be modified")

    __setitem__ = __delitem__ = append = extend = insert = remove = pop = clear = sort = reverse = _immutable
    __iadd__ = __imul__ = _immutable  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (list(self),))


def freeze(value: Any) -> Any:
    """A hashable, read-only copy of a JSON-like value (dicts and lists stay dicts and lists)."""
    if isinstance(value, Mapping):
        return _FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return _FrozenList(freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class ServiceAllocation:
    """A pool's serviceAllocation: its priority and which Services it is reserved for."""

    priority: int | None = None
    namespaces: frozenset[str] = frozenset()
    namespace_selectors: tuple[Object, ...] = ()
    service_selectors: tuple[Object, ...] = ()

    def __post_init__(self) -> None:
        # Plain lists and dicts are accepted and stored frozen, so the dataclass stays hashable.
        if isinstance(self.namespaces, str):
            raise PoolError(f"namespaces must be a list of namespace names, got the string {self.namespaces!r}")
        try:
            object.__setattr__(self, "namespaces", frozenset(self.namespaces))
            object.__setattr__(self, "namespace_selectors", tuple(freeze(s) for s in self.namespace_selectors))
            object.__setattr__(self, "service_selectors", tuple(freeze(s) for s in self.service_selectors))
        except TypeError as e:
            raise PoolError(f"serviceAllocation: namespaces and selectors must be lists ({e})") from None
        problems = _allocation_problems(self.priority, list(self.namespaces), list(self.namespace_selectors),
                                        list(self.service_selectors), "serviceAllocation")
        if problems:
            raise PoolError("; ".join(problems), problems)

    def selects(self, namespace: str, namespace_labels: dict[str, str], service_labels: dict[str, str]) -> bool:
        """Whether this pool may serve the Service (MetalLB semantics: namespace terms AND service terms)."""
        if (self.namespaces or self.namespace_selectors) and not (
                namespace in self.namespaces
                or any(selector_matches(s, namespace_labels) for s in self.namespace_selectors)):
            return False
        return not self.service_selectors or any(selector_matches(s, service_labels) for s in self.service_selectors)


def _allocation_problems(priority: Any, namespaces: Any, namespace_selectors: Any, service_selectors: Any,
                         where: str) -> list[str]:
    problems = []
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        problems.append(f"{where}.priority must be an integer (lower number = preferred), got {priority!r}")
    if not isinstance(namespaces, list | tuple):
        problems.append(f"{where}.namespaces must be a list of namespace names, got {namespaces!r}")
    else:
        problems.extend(f"{where}.namespaces[{i}] must be a non-empty namespace name, got {ns!r}"
                        for i, ns in enumerate(namespaces) if not isinstance(ns, str) or not ns)
    for field, selectors in (("namespaceSelectors", namespace_selectors), ("serviceSelectors", service_selectors)):
        if not isinstance(selectors, list | tuple):
            problems.append(f"{where}.{field} must be a list of label selectors, got {selectors!r}")
            continue
        for i, selector in enumerate(selectors):
            problems.extend(label_selector_problems(selector, f"{where}.{field}[{i}]"))
    return problems


def service_allocation_problems(spec: Any, where: str = "spec.serviceAllocation") -> list[str]:
    """Every problem with a CRD serviceAllocation object (camelCase keys); empty when valid."""
    if not isinstance(spec, Mapping):
        return [f"{where} must be an object with priority, namespaces, namespaceSelectors, serviceSelectors, "
                f"got {spec!r}"]
    return _allocation_problems(spec.get("priority"), _absent_is_empty(spec.get("namespaces")),
                                _absent_is_empty(spec.get("namespaceSelectors")),
                                _absent_is_empty(spec.get("serviceSelectors")), where)


def _absent_is_empty(value: Any) -> Any:
    # YAML `field:` with nothing after it arrives as null; it means "none", not a type error.
    return [] if value is None else value


def parse_service_allocation(spec: Object) -> ServiceAllocation:
    """Build a ServiceAllocation from the CRD's serviceAllocation object; PoolError lists every problem."""
    problems = service_allocation_problems(spec)
    if problems:
        raise PoolError("; ".join(problems), problems)
    return ServiceAllocation(
        priority=spec.get("priority"),
        namespaces=frozenset(_absent_is_empty(spec.get("namespaces"))),
        namespace_selectors=tuple(_absent_is_empty(spec.get("namespaceSelectors"))),
        service_selectors=tuple(_absent_is_empty(spec.get("serviceSelectors"))),
    )


def candidate_pools(pools: Iterable[Pool], namespace: str, namespace_labels: dict[str, str],
                    service_labels: dict[str, str], requested_pool: str | None = None) -> list[Pool]:
    """The pools a Service may get an address from, best first.

    A requested pool is honoured on its own, even with autoAssign off or a serviceAllocation that does not
    select the Service (as MetalLB does). Otherwise: auto-assign pools whose serviceAllocation selects the
    Service, by priority (lower first, unset last) then name, followed by pools without serviceAllocation by name.
    """
    if requested_pool is not None:
        return [p for p in pools if p.name == requested_pool][:1]
    reserved: list[Pool] = []
    general: list[Pool] = []
    for pool in pools:
        if not pool.auto_assign:
            continue
        if pool.allocation is None:
            general.append(pool)
        elif pool.allocation.selects(namespace, namespace_labels, service_labels):
            reserved.append(pool)
    reserved.sort(key=lambda p: (p.allocation.priority is None, p.allocation.priority or 0, p.name))  # type: ignore
    general.sort(key=lambda p: p.name)
    return reserved + general
