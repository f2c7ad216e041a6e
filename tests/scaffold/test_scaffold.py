"""Starter specs: names, classes, generated data, the schema modeline, never overwriting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dlnflow.core.errors import InputError
from dlnflow.data.dataset import load_dataset
from dlnflow.scaffold.starter import (
    DEFAULT_CLASSES,
    MENTION_TEMPLATES,
    ROWS_PER_CLASS,
    check_name,
    make_rows,
    parse_classes,
    scaffold,
    schema_reference,
)
from dlnflow.spec.compiler import compile_spec


def test_rows_are_deterministic_balanced_and_unique() -> None:
    rows = make_rows(DEFAULT_CLASSES)
    assert rows == make_rows(DEFAULT_CLASSES)
    assert rows != make_rows(DEFAULT_CLASSES, seed=1)
    targets = [r["target"] for r in rows]
    assert targets.count("animal") == targets.count("fruit") == ROWS_PER_CLASS
    assert len({r["input"] for r in rows}) == len(rows)


def test_word_list_classes_get_real_words() -> None:
    from dlnflow.data.tasks.label_mapping import ANIMALS, FRUITS

    rows = make_rows(("animal", "fruit"))
    assert all(r["input"] in (ANIMALS if r["target"] == "animal" else FRUITS) for r in rows)


def test_other_classes_get_inputs_naming_them() -> None:
    rows = make_rows(("urgent", "later", "never"))
    assert len(rows) == 3 * ROWS_PER_CLASS
    assert all(r["target"] in r["input"] for r in rows)
    assert len({r["input"] for r in rows}) == len(rows)
    assert len(MENTION_TEMPLATES) >= ROWS_PER_CLASS


@pytest.mark.parametrize("text, expected", [
    ("a,b", ("a", "b")), (" yes , no ,maybe", ("yes", "no", "maybe")), ("(A),(B)", ("(A)", "(B)")),
])
def test_parse_classes(text: str, expected: tuple[str, ...]) -> None:
    assert parse_classes(text) == expected


@pytest.mark.parametrize("text, message", [
    ("solo", "one class"), ("a,,b", "empty class"), ("a,b,a", "repeats"), ("", "empty class"),
])
def test_parse_classes_rejects(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_classes(text)


@pytest.mark.parametrize("name", ["-x", "a b", "a/b", "", "ünï"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InputError, match="invalid pipeline name"):
        check_name(name)


def test_modeline_is_relative_inside_the_project(project: Path, tmp_path: Path) -> None:
    assert schema_reference(project / "pipelines") == "../schemas/pipeline.schema.json"
    assert schema_reference(project) == "schemas/pipeline.schema.json"
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "pipeline.schema.json").write_text("{}")
    assert schema_reference(tmp_path / "a" / "b") == "../../schemas/pipeline.schema.json"


def test_modeline_outside_a_project_points_at_the_package_copy(tmp_path: Path) -> None:
    ref = Path(schema_reference(tmp_path))
    assert ref.is_absolute()
    assert ref.name == "pipeline.schema.json"
    assert json.loads(ref.read_text())["title"] == "dlnflow pipeline spec"


@pytest.mark.parametrize("layers, classes", [(1, DEFAULT_CLASSES), (2, DEFAULT_CLASSES),
                                             (1, ("yes", "no", "null")), (2, ("a b", "c"))])
def test_scaffold_compiles_and_its_data_loads(tmp_path: Path, layers: int, classes: tuple[str, ...]) -> None:
    made = scaffold("demo", tmp_path, layers, classes)
    text = made.spec.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    spec = yaml.safe_load(text)
    assert spec["layers"][-1]["output"]["classes"] == list(classes)  # 'yes'/'no'/'null' stay text
    pipeline = compile_spec(made.spec)
    assert len(pipeline.graph) == layers
    assert pipeline.train.method == ("vi" if layers == 2 else "dln1")
    data = load_dataset(pipeline.data, pipeline.graph.output.classes)
    total = len(data.train) + len(data.dev) + len(data.test)
    assert total == ROWS_PER_CLASS * len(classes)
    assert len(data.dev) >= 2 * len(classes) - 1


def test_scaffold_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "demo.jsonl").write_text("mine\n")
    with pytest.raises(InputError, match="already exists"):
        scaffold("demo", tmp_path)
    assert (tmp_path / "demo.jsonl").read_text() == "mine\n"
    assert not (tmp_path / "demo.yaml").exists()


def test_layers_must_be_one_or_two(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="1 or 2"):
        scaffold("demo", tmp_path, layers=3)
