"""How leifurctl prints: aligned tables for people, JSON or YAML for scripts."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import yaml

from leifur.kube import timestamps

FORMATS = ("table", "json", "yaml")

# leifurctl's exit codes, the same for every command.
EXIT_OK = 0
EXIT_UNREADABLE = 1  # the cluster or the input could not be read
EXIT_USAGE = 2  # wrong arguments
EXIT_PROBLEMS = 3  # the command's answer is a problem: listed (status), not translated, or a change (migrate)
NONE = "-"


def dump(data: Any, fmt: str) -> str:
    """The whole report as JSON (indented) or YAML, keys in the order the report builds them."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100000)
    raise ValueError(f"unknown output format {fmt!r}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns left-aligned and three spaces apart, like kubectl; the last column is never padded."""
    cells = [[str(h) for h in headers]] + [[NONE if c is None or c == "" else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        line = "   ".join(c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True))
        lines.append((line + "   " + r[-1]).rstrip() if len(r) > 1 else r[0])
    return "\n".join(lines)


def count(n: int) -> str:
    """An address count for a table: exact up to a billion; 2^k or three digits of precision beyond."""
    if n < 10**9:
        return str(n)
    if n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    return f"{n:.3g}".replace("e+", "e")


def json_count(n: int) -> int | str:
    """An address count for JSON and YAML: a number, or a string past int64 (as the pool status does)."""
    return n if n < 2**63 else str(n)


def age(text: str | None, now: dt.datetime | None = None) -> str:
    """How long ago a timestamp was, like kubectl: 45s, 12m, 3h, 5d."""
    when = timestamps.parse(text)
    if when is None:
        return NONE
    seconds = int(((now or dt.datetime.now(dt.UTC)) - when).total_seconds())
    if seconds < 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
