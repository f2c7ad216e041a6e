"""``dlnflow init`` from an empty folder: init, validate, train (stand-in and real model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from standin import StandIn

from dlnflow.cli import cli


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_init_validate_train_from_an_empty_folder(standin: StandIn, empty: Path) -> None:
    res = invoke("init", "demo")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in empty.iterdir()) == ["demo.jsonl", "demo.yaml"]
    assert "dlnflow train demo.yaml" in res.stdout
    res = invoke("validate", "demo.yaml")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("ok  demo.yaml  (1 layer, method dln1)")
    res = invoke("--json", "train", "demo.yaml")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["iterations_run"] == 2
    assert result["backend_calls"] > 0
    assert (empty / "demo.lock.yaml").exists()
    res = invoke("report", "demo.yaml")
    assert res.exit_code == 0, res.output


def test_two_layers_and_own_classes(standin: StandIn, empty: Path) -> None:
    res = invoke("--json", "init", "deep", "--layers", "2", "--classes", "cat,dog", "--dir", "sub/dir")
    assert res.exit_code == 0, res.output
    made = json.loads(res.stdout)
    assert made == {"spec": str(Path("sub/dir/deep.yaml")), "data": str(Path("sub/dir/deep.jsonl")),
                    "classes": ["cat", "dog"], "layers": 2}
    spec = yaml.safe_load((empty / "sub/dir/deep.yaml").read_text())
    assert [layer["name"] for layer in spec["layers"]] == ["think", "answer"]
    assert spec["layers"][1]["inputs"] == ["x", "think"]
    assert invoke("validate", "sub/dir/deep.yaml").exit_code == 0
    res = invoke("--json", "train", "sub/dir/deep.yaml")
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["prompts"]) == {"think.prompt", "answer.prompt"}


def test_refuses_to_overwrite(empty: Path) -> None:
    assert invoke("init", "demo").exit_code == 0
    before = (empty / "demo.yaml").read_bytes()
    res = invoke("init", "demo")
    assert res.exit_code == 2
    assert "already exist" in res.stderr and "never overwrites" in res.stderr
    assert (empty / "demo.yaml").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (("init", "bad name"), "invalid pipeline name"),
    (("init", "x", "--classes", "only"), "one class"),
    (("init", "x", "--layers", "3"), "'3' is not one of"),
])
def test_bad_arguments_exit_2(empty: Path, args: tuple[str, ...], message: str) -> None:
    res = invoke(*args)
    assert res.exit_code == 2
    assert message in res.stderr
    assert list(empty.iterdir()) == []


def test_modeline_relative_inside_a_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "pipeline.schema.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert invoke("init", "p", "--dir", "pipelines").exit_code == 0
    first = (tmp_path / "pipelines" / "p.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/pipeline.schema.json"


@pytest.mark.real
def test_scaffold_trains_on_the_real_model(empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DLNFLOW_CACHE_DIR", raising=False)
    monkeypatch.delenv("DLNFLOW_RUNS_DIR", raising=False)
    assert invoke("init", "demo").exit_code == 0
    res = invoke("--json", "train", "demo.yaml", "--iterations", "1")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["iterations_run"] == 1
    assert result["backend_calls"] > 0
    m = result["metrics"]
    assert all(0.0 <= m[k] <= 1.0 for k in ("dev_before", "dev", "test_before", "test"))
    assert m["dev"] >= m["dev_before"]  # the best-dev prompts are kept
    # everything went to the folder itself: no project root above it
    assert (empty / "cache").is_dir() and (empty / "runs" / "demo").is_dir()
    assert (empty / "demo.lock.yaml").exists()
