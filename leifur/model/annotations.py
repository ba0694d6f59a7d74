"""The Service annotations we read, with MetalLB's spellings as aliases. Pure: no I/O.

A Service numbered by MetalLB carries `metallb.io/…` (or the older `metallb.universe.tf/…`)
annotations; they mean what ours mean, so they are read when ours is absent. Presence decides,
as in MetalLB: an annotation set to "" still wins over the ones after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from leifur.model import names


@dataclass(frozen=True)
class Read:
    value: str | None
    source: str  # the annotation the value came from (ours when none is set)
    overridden: tuple[tuple[str, str], ...] = ()  # (annotation, value): set, but another one won


def read(annotations: Mapping[str, str] | None, name: str) -> Read:
    """The value of our annotation `name`, or of its first MetalLB alias that is set."""
    annotations = annotations or {}
    present = [(a, annotations[a]) for a in (name, *names.METALLB_ALIASES.get(name, ())) if a in annotations]
    if not present:
        return Read(None, name)
    (source, value), rest = present[0], present[1:]
    return Read(value, source, tuple((a, v) for a, v in rest if v.strip() != value.strip()))


def disagreements(annotations: Mapping[str, str] | None) -> list[str]:
    """One sentence per annotation we read whose spellings disagree: which one wins and which is ignored."""
    out = []
    for name in names.METALLB_ALIASES:
        r = read(annotations, name)
        for ignored, value in r.overridden:
            out.append(f"{ignored}={value!r} is ignored: {r.source}={r.value!r} wins")
    return out
