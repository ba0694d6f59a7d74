"""In-memory stand-ins for the controller's informer caches and event recorder, shared by the reconcile tables."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from leifur.model.objects import key_of


class FakeLister:
    """An informer's cache: dict-backed, hands out copies like the real one."""

    def __init__(self, objs: Iterable[dict] = ()) -> None:
        self.store: dict[str, dict] = {key_of(o): copy.deepcopy(o) for o in objs}

    def get(self, key: str) -> dict | None:
        obj = self.store.get(key)
        return copy.deepcopy(obj) if obj is not None else None

    def objects(self) -> list[dict]:
        return copy.deepcopy(list(self.store.values()))


class FakeRecorder:
    """Logs one line per Event into the shared call log; keeps the messages."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.messages: list[str] = []

    def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        # What the real recorder needs to write an Event at all.
        assert type_ in ("Normal", "Warning") and obj.get("kind") and obj["metadata"].get("name")
        self.log.append(f"event {key_of(obj)} {type_} {reason}")
        self.messages.append(message)
