"""Facts about any API object read as a dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# An API object as read from the API server or a manifest: JSON decoded into dicts and lists.
Object = dict[str, Any]


def key_of(obj: Mapping[str, Any]) -> str:
    """The work-queue and cache key: "namespace/name" for namespaced objects, "name" for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])
