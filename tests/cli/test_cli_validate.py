"""``dlnflow validate``: located problems for people and programs, exit codes, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from paths import BAD_SPECS

from dlnflow.cli import cli

BAD = BAD_SPECS

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

THREE_MISTAKES = """\
version: 1
name: demo
data:
  format: task
  task: {name: label_mapping}
layers:
  - name: answer
    inputs: [x, thikn]
    promt: "Pick a colour."
    output: {classes: [blue, red]}
train:
  method: dln
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def three(tmp_path: Path) -> Path:
    path = tmp_path / "three.yaml"
    path.write_text(THREE_MISTAKES)
    return path


def test_valid_spec(good: Path) -> None:
    code, out, err = run("validate", str(good))
    assert code == 0
    assert out == f"ok  {good}  (1 layer, method dln1)\n"
    assert err == ""


def test_three_mistakes_three_located_errors(three: Path) -> None:
    code, out, err = run("validate", str(three))
    assert code == 2
    assert out == ""
    located = [line for line in err.splitlines() if line.startswith(f"{three}:")]
    assert located == [
        f"{three}:8:17: layer 'answer' reads 'thikn', but no layer has that name [/layers/0/inputs/1]",
        f"{three}:9:5: unknown key 'promt' under 'layers/0'; did you mean 'prompt'? [/layers/0/promt]",
        f"{three}:12:11: 'dln' is not one of: dln1, vi, ape, fewshot, none; did you mean 'dln1'? "
        "[/train/method]",
    ]
    assert "    promt: \"Pick a colour.\"\n      ^" in err  # source line and caret under the key
    assert "3 problems found." in err
    assert "Traceback" not in err + out


def test_json_output(three: Path, good: Path) -> None:
    code, out, _ = run("--json", "validate", str(good), str(three))
    assert code == 2
    problems = json.loads(out)
    assert [(p["line"], p["col"], p["pointer"]) for p in problems] == [
        (8, 17, "/layers/0/inputs/1"), (9, 5, "/layers/0/promt"), (12, 11, "/train/method")]
    assert set(problems[0]) == {"file", "line", "col", "pointer", "message"}
    assert problems[0]["file"] == str(three)


def test_json_output_when_all_valid(good: Path) -> None:
    code, out, _ = run("--json", "validate", str(good))
    assert code == 0 and json.loads(out) == []


def test_mixed_good_and_bad(good: Path, three: Path) -> None:
    code, out, err = run("validate", str(good), str(three))
    assert code == 2
    assert out.startswith(f"ok  {good}")
    assert "2 specs checked: 1 with problems (3 in total)" in err


def test_missing_file_is_bad_input_not_a_crash(tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert f"{tmp_path / 'nope.yaml'}: file not found" in err
    assert "Traceback" not in err


def test_syntax_errors_are_located(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    code, _, err = run("validate", "json_syntax.json", "yaml_syntax.yaml", "merge_conflict.yaml")
    assert code == 2
    assert "json_syntax.json:5:32: JSON syntax error: Expecting ',' delimiter" in err
    assert "yaml_syntax.yaml:8:17: YAML syntax error: mapping values are not allowed here" in err
    assert "merge_conflict.yaml:8:1: unresolved git merge conflict (lines 8-12)" in err


def test_whole_catalog_exits_2_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    specs = sorted(p.name for p in BAD.iterdir() if p.suffix in (".yaml", ".json"))
    specs.remove("expected.yaml")
    code, out, err = run("validate", *specs)
    assert code == 2 and out == ""
    assert f"{len(specs)} specs checked: {len(specs)} with problems" in err
    assert "Traceback" not in err


def test_shipped_pipelines_are_valid(shared_data: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    files = sorted(str(p.relative_to(project)) for p in (project / "pipelines").glob("*.yaml"))
    specs = [f for f in files if not f.endswith(".lock.yaml")]
    assert len(specs) >= 18
    code, out, err = run("validate", *files)  # what `dlnflow validate pipelines/*.yaml` receives
    assert code == 0, err
    assert sum(line.startswith("ok  ") for line in out.splitlines()) == len(specs)
    assert "ok  pipelines/navigate-dln2.yaml  (2 layers, method vi)" in out


def test_lock_files_are_skipped(good: Path) -> None:
    lock = good.with_name("good.lock.yaml")
    lock.write_text("schema: 1\nlayers: {}\n")
    code, out, _ = run("validate", str(good), str(lock))
    assert code == 0
    skipped = f"skip  {lock}  (a lock file of learned prompts; 'dlnflow status' checks it)"
    assert out.splitlines()[1] == skipped


def test_help_explains_with_an_example() -> None:
    code, out, _ = run("validate", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Exit code 0 when all specs are valid, 2 otherwise" in text
    assert "dlnflow validate pipelines/*.yaml" in text
