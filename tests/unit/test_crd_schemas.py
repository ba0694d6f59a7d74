"""The CRDs document themselves: every field of every schema, at every depth, has a description,
so that `kubectl explain` says what it is (shown on the real API server in
tests/integration/test_crds.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

CRDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "crds").glob("*.yaml"))


def schema_nodes(schema: dict, path: str) -> Iterator[tuple[str, dict]]:
    """(path, schema) of `schema` and of everything under it: properties, list items and map values."""
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from schema_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from schema_nodes(schema["additionalProperties"], f"{path}{{}}")


def undescribed(crd: dict) -> list[str]:
    """The paths of the schema nodes without a description, as `kubectl explain` takes them
    (`v1alpha1 ipaddresspools.spec.addresses[]`)."""
    plural = crd["spec"]["names"]["plural"]
    return [f"{version['name']} {path}"
            for version in crd["spec"]["versions"]
            for path, node in schema_nodes(version["schema"]["openAPIV3Schema"], plural)
            # The API server refuses anything but a type for metadata: explain shows ObjectMeta's.
            if path != f"{plural}.metadata" and not str(node.get("description", "")).strip()]


@pytest.mark.parametrize("crd_file", CRDS, ids=lambda p: p.name)
def test_every_field_of_every_crd_has_a_description(crd_file: Path) -> None:
    missing = undescribed(yaml.safe_load(crd_file.read_text()))
    assert not missing, f"{crd_file.name}: give these fields a description: {', '.join(missing)}"


@pytest.mark.parametrize("schema, expected", [
    ({"description": "d", "properties": {"a": {"type": "string"}}}, ["v1 things.a"]),
    ({"description": "d", "properties": {"a": {"description": "d", "properties": {"b": {"type": "integer"}}}}},
     ["v1 things.a.b"]),
    ({"description": "d", "properties": {"l": {"description": "d", "items": {"type": "string"}}}}, ["v1 things.l[]"]),
    ({"description": "d", "properties": {"m": {"description": "d", "additionalProperties": {"type": "string"}}}},
     ["v1 things.m{}"]),
    ({"properties": {"a": {"description": " "}}}, ["v1 things", "v1 things.a"]),
    ({"description": "d", "properties": {"a": {"description": "d", "items": {"description": "d"}}}}, []),
    ({"description": "d", "properties": {"metadata": {"type": "object"}}}, []),
    ({"description": "d", "properties": {"s": {"description": "d", "properties": {"metadata": {}}}}},
     ["v1 things.s.metadata"]),
], ids=["top-level field", "nested field", "list items", "map values", "root and blank", "all described",
        "the object's metadata", "a field named metadata below"])
def test_the_walk_names_every_undescribed_node(schema: dict, expected: list[str]) -> None:
    crd = {"spec": {"names": {"plural": "things"}, "versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}]}}
    assert undescribed(crd) == expected
