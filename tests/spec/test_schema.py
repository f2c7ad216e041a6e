"""The JSON Schema: valid Draft 2020-12, documented everywhere, in step with the settings dataclasses."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from paths import ROOT, shipped_specs

from dlnflow.core.registry import BACKENDS, LOSSES, OPTIMIZERS
from dlnflow.graph.layers import Decoding
from dlnflow.spec.loader import packaged_schema, schema
from dlnflow.spec.settings import (
    DATA_FORMATS,
    BudgetSettings,
    SplitSettings,
    TrainSettings,
)

PACKAGED = ROOT / "dlnflow" / "schema" / "pipeline.schema.json"
LINKED = ROOT / "schemas" / "pipeline.schema.json"


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    root = schema()
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = root["$defs"][name]
    return node


def properties(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted name, schema) under a ``properties`` mapping anywhere in the schema."""
    if isinstance(node, dict):
        for key, sub in node.get("properties", {}).items():
            yield f"{where}.{key}", sub
        for key, sub in node.items():
            if key != "properties" or not isinstance(sub, dict):
                yield from properties(sub, f"{where}/{key}")
            else:
                for name, prop in sub.items():
                    yield from properties(prop, f"{where}.{name}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from properties(sub, f"{where}[{i}]")


def defaults(dataclass: type) -> dict[str, Any]:
    out = {}
    for f in fields(dataclass):
        out[f.name] = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    return out


def test_schema_is_valid_draft_2020_12() -> None:
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(s)


def test_every_property_has_a_description() -> None:
    seen = 0
    for name, sub in properties(schema()):
        if sub is False or "/if" in name:  # keys switched off in a branch; branch conditions
            continue
        seen += 1
        assert isinstance(sub, dict), name
        assert resolve(sub).get("description"), f"{name} has no description"
    assert seen > 60


def test_every_object_rejects_unknown_keys() -> None:
    def walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            if "properties" in node and node.get("type") == "object":
                yield where, node
            for key, sub in node.items():
                yield from walk(sub, f"{where}/{key}")

    objects = list(walk(schema(), ""))
    assert len(objects) >= 10
    for where, node in objects:
        assert node.get("additionalProperties") is False, where


def test_train_defaults_equal_train_settings() -> None:
    train = schema()["$defs"]["train"]["properties"]
    expected = defaults(TrainSettings)
    assert set(train) == set(expected)
    for name, value in expected.items():
        if name == "budget":
            continue
        assert train[name]["default"] == value, name
    budget = train["budget"]["properties"]
    assert {k: v["default"] for k, v in budget.items()} == defaults(BudgetSettings)


def test_split_and_generate_defaults_equal_dataclasses() -> None:
    data = schema()["$defs"]["data"]["properties"]
    assert {k: v["default"] for k, v in data["split"]["properties"].items()} == defaults(SplitSettings)
    generate = schema()["$defs"]["layer"]["properties"]["generate"]["properties"]
    values = {k: v["default"] for k, v in generate.items()}
    values["stop"] = tuple(values["stop"])
    assert values == defaults(Decoding)


def test_enums_match_the_registries() -> None:
    s = packaged_schema()
    assert tuple(s["properties"]["loss"]["enum"]) == LOSSES.builtin_names()
    assert tuple(s["$defs"]["train"]["properties"]["method"]["enum"]) == OPTIMIZERS.builtin_names()
    assert tuple(s["$defs"]["model"]["properties"]["backend"]["enum"]) == BACKENDS.builtin_names()
    assert tuple(s["$defs"]["data"]["properties"]["format"]["enum"]) == DATA_FORMATS


def test_examples_are_valid_values() -> None:
    checked = 0
    base = Draft202012Validator(schema())
    for name, sub in properties(schema()):
        if isinstance(sub, dict) and "examples" in sub:
            for example in sub["examples"]:
                errors = list(base.evolve(schema=sub).iter_errors(example))
                assert not errors, (name, example, errors[0].message)
                checked += 1
    assert checked >= 10


def test_package_copy_and_schemas_folder_are_one_file() -> None:
    assert LINKED.is_symlink()
    assert os.readlink(LINKED) == "../dlnflow/schema/pipeline.schema.json"
    assert LINKED.resolve() == PACKAGED.resolve()
    assert json.loads(LINKED.read_text()) == schema()


SHIPPED = shipped_specs()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_pipelines_point_editors_at_the_schema(name: str, project: Path) -> None:
    spec = project / "pipelines" / name
    first = spec.read_text("utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/pipeline.schema.json"
    target = spec.parent / first.split("$schema=", 1)[1]
    assert target.read_bytes() == PACKAGED.read_bytes()
