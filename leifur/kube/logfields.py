"""Details of a log line as fields: `log.info("released %s", ip, extra=fields(service=key, ip=ip))`.

With JSON logs (observability.JSONFormatter) each field is a top-level key next to `msg`, so that
a collector can filter on it (`service == "web/frontend"`) instead of matching the text.
"""

from __future__ import annotations

from collections.abc import Iterable

# The fields operators filter on: the Service (namespace/name), an IP, a node, a pool, a network
# interface, another object of ours (Kind/name, e.g. BGPPeer/r1). One name each, in every program.
FIELDS = ("service", "ip", "node", "pool", "interface", "object")

Value = str | list[str]


def _value(v: object) -> Value:
    if isinstance(v, str):
        return v
    if isinstance(v, Iterable):
        values = [str(x) for x in v]
        # One value is a string whatever the call had in hand: `.service == "web/frontend"` finds it.
        return values[0] if len(values) == 1 else values
    return str(v)


def fields(**details: object) -> dict[str, Value]:
    """`extra=` for a log call. A value is a string (an IP object becomes its text), or a list of
    strings for several (a list of one is that one string); None leaves the field out. Raises
    ValueError for a name not in FIELDS (a misspelt field would never be found by a filter)."""
    unknown = sorted(details.keys() - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown log field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    return {name: _value(v) for name, v in details.items() if v is not None}


def of(record: object) -> dict[str, Value]:
    """The fields a log record carries, in FIELDS order."""
    return {name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None}
