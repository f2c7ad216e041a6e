"""Loading specs with positions, and the catalog of bad specs with their exact locations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from paths import BAD_SPECS

from dlnflow._util.pointers import pointer
from dlnflow.core.errors import Problem, SpecError
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.document import sort_problems
from dlnflow.spec.loader import conflict_problems, load_document, load_spec

BAD = BAD_SPECS
EXPECTED: dict[str, list] = yaml.safe_load((BAD / "expected.yaml").read_text("utf-8"))

GOOD = """\
version: 1
name: demo
data:
  format: task
  task: {name: label_mapping}
layers:
  - name: answer
    prompt: "Pick a colour."
    output: {classes: [blue, red]}
"""


def problems_of(path: Path | str) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        compile_spec(path)
    return info.value.problems


# -- the catalog -------------------------------------------------------------------------------
def test_catalog_is_complete_and_large_enough() -> None:
    specs = {p.name for p in BAD.iterdir() if p.suffix in (".yaml", ".json")} - {"expected.yaml"}
    assert specs == set(EXPECTED)
    assert len(specs) >= 25
    assert sum(name.endswith(".json") for name in specs) >= 4


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_spec_catalog(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    line, col, ptr, fragment, count = EXPECTED[name]
    monkeypatch.chdir(BAD)
    problems = problems_of(name)
    first = problems[0]
    assert (first.file, first.line, first.col, first.pointer) == (name, line, col, ptr)
    assert fragment in first.message
    assert len(problems) == count, [p.render() for p in problems]
    lines = (BAD / name).read_bytes().decode("utf-8", "replace").splitlines()
    if 0 < line <= len(lines):
        assert first.source_line == lines[line - 1]


# -- three independent mistakes at once ------------------------------------------------------------
def test_three_mistakes_three_located_problems(tmp_path: Path) -> None:
    spec = tmp_path / "three.yaml"
    spec.write_text(GOOD.replace("name: demo", "nmae: demo\nname: demo")
                    .replace("    prompt:", "    inputs: [x, thikn]\n    prompt:") + "loss: exact\n")
    problems = problems_of(spec)
    assert [(p.line, p.col, p.pointer) for p in problems] == [
        (2, 1, "/nmae"), (9, 17, "/layers/0/inputs/1"), (12, 7, "/loss")]
    assert "did you mean 'name'?" in problems[0].message
    assert "'thikn', but no layer has that name" in problems[1].message
    assert "did you mean 'exact_match'?" in problems[2].message


# -- positions ---------------------------------------------------------------------------------------
def test_yaml_positions_of_values_and_keys(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(GOOD)
    doc = load_document(spec)
    assert doc.locate("/layers/0/output/classes/1") == (9, 30)
    assert doc.locate("/data/task", key=True) == (5, 3)
    assert doc.locate("/data/task") == (5, 9)
    assert doc.locate("/layers/0/nothing/here") == doc.locate("/layers/0")
    assert doc.source_line(7) == "  - name: answer"
    assert doc.base_dir == tmp_path.resolve()


def test_json_positions_and_same_data_as_yaml(tmp_path: Path) -> None:
    data = yaml.safe_load(GOOD)
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps(data, indent=2))
    doc = load_document(as_json)
    assert doc.data == data
    line, col = doc.locate("/layers/0/name")
    assert as_json.read_text().splitlines()[line - 1][col - 1:].startswith('"answer"')
    as_yaml = tmp_path / "p.yaml"
    as_yaml.write_text(GOOD)
    a, b = compile_spec(as_json), compile_spec(as_yaml)
    assert a.graph.state() == b.graph.state() and a.train == b.train and a.data == b.data


def test_json_numbers_keep_json_meaning(tmp_path: Path) -> None:
    spec = tmp_path / "p.json"
    data = yaml.safe_load(GOOD)
    data["train"] = {"rewrite_temperature": 1e-1}
    spec.write_text(json.dumps(data))
    assert load_spec(spec).data["train"]["rewrite_temperature"] == pytest.approx(0.1)


def test_label_keys_stay_text(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(GOOD + "loss: exact_match\n")
    doc = load_document(spec)
    assert doc.data["loss"] == "exact_match"
    spec.write_text("version: 1\nlabels: {0: negative, 1: positive}\n")
    assert load_document(spec).data["labels"] == {"0": "negative", "1": "positive"}


def test_bom_is_accepted(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_spec(spec).data["name"] == "demo"


def test_file_name_as_given_and_missing_file(tmp_path: Path) -> None:
    problems = problems_of(tmp_path / "absent.yaml")
    assert problems[0].message == "file not found" and problems[0].line == 0
    problems = problems_of(tmp_path)
    assert "folder" in problems[0].message


def test_multiple_documents_rejected(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(GOOD + "---\nversion: 1\n")
    (p,) = problems_of(spec)
    assert (p.line, p.col) == (10, 1) and "single document" in p.message


def test_conflict_markers_each_region_reported() -> None:
    text = "a: 1\n<<<<<<< HEAD\nb: 2\n=======\nb: 3\n>>>>>>> x\nc: 1\n<<<<<<< HEAD\nd: 1\n"
    problems = conflict_problems(text, "f.yaml")
    assert [(p.line, p.message) for p in problems] == [
        (2, "unresolved git merge conflict (lines 2-6)"),
        (8, "unresolved git merge conflict (no closing >>>>>>>)")]


def test_schema_errors_from_branches_are_not_doubled(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text("version: 1\nname: demo\nmodels:\n  api: {backend: opnai, model: gpt, n_ctx: 512}\n"
                    + GOOD.split("name: demo\n")[1])
    (p,) = problems_of(spec)  # only the bad backend, not follow-on 'model'/'n_ctx' complaints
    assert p.pointer == "/models/api/backend"


def test_unknown_key_points_at_the_key_with_allowed_names(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(GOOD.replace("    prompt:", "    generate: {max_token: 8}\n    prompt:"))
    (p,) = problems_of(spec)
    assert (p.line, p.col, p.pointer) == (8, 16, "/layers/0/generate/max_token")
    assert "did you mean 'max_tokens'?" in p.message
    assert p.hint is not None and "temperature" in p.hint


def test_null_value_hint(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(GOOD.replace('prompt: "Pick a colour."', "prompt:"))
    (p,) = problems_of(spec)
    assert p.pointer == "/layers/0/prompt" and "got null" in p.message and "null" in (p.hint or "")


def test_helpers() -> None:
    assert pointer(["grid", "a/b", 0]) == "/grid/a~1b/0"
    a = Problem("f", 3, 1, "", "later")
    b = Problem("f", 1, 9, "", "first")
    assert sort_problems([a, b, a]) == [b, a]


def test_json_spec_may_name_its_schema(tmp_path: Path) -> None:
    data = {"$schema": "../schemas/pipeline.schema.json", **yaml.safe_load(GOOD)}
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps(data, indent=2))
    assert compile_spec(spec).name == "demo"


def test_model_file_must_exist(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(GOOD.replace("data:", "models:\n  local: {path: models/none.gguf}\ndata:"))
    (p,) = problems_of(spec)
    assert (p.line, p.col, p.pointer) == (4, 17, "/models/local/path")
    assert p.message == "model file not found: models/none.gguf"
