"""``dlnflow run`` through CliRunner: inputs from options, files and stdin; traces; the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import TWO_LAYERS, write_spec
from standin import StandIn

from dlnflow.cli import cli


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin)


def test_run_prints_one_line_per_input(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    res = invoke("run", str(spec), "--input", "sparrow", "--input", "mango")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["sparrow", "mango"]
    assert all(line.split("\t")[1] in ("blue", "red") for line in lines)


def test_run_reads_a_file_and_stdin_and_skips_blank_lines(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    (tmp_path / "inputs.txt").write_text("sparrow\n\nmango\n", encoding="utf-8")
    from_file = json.loads(invoke("--json", "run", str(spec), "--file", str(tmp_path / "inputs.txt")).stdout)
    from_stdin = json.loads(invoke("--json", "run", str(spec), "--file", "-", stdin="sparrow\nmango\n").stdout)
    assert [r["input"] for r in from_file["outputs"]] == ["sparrow", "mango"]
    assert from_file["outputs"] == from_stdin["outputs"]


def test_run_trace_shows_hidden_layers(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, method="vi", layers=TWO_LAYERS)
    out = json.loads(invoke("--json", "run", str(spec), "--input", "kiwi", "--trace").stdout)
    (row,) = out["outputs"]
    assert set(row["trace"]) == {"think"} and isinstance(row["trace"]["think"], str)
    text = invoke("run", str(spec), "--input", "kiwi", "--trace").stdout.splitlines()
    assert text[0].startswith("  [think] ") and text[-1].startswith("kiwi\t")
    plain = json.loads(invoke("--json", "run", str(spec), "--input", "kiwi").stdout)
    assert "trace" not in plain["outputs"][0]


def test_run_uses_the_learned_prompts(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    assert invoke("train", str(spec)).exit_code == 0
    res = invoke("--json", "run", str(spec), "--input", "sparrow")
    out = json.loads(res.stdout)
    assert out["lock_note"] == "using learned prompts from tiny.lock.yaml"
    assert out["outputs"][0]["output"] in ("blue", "red")


@pytest.mark.real
def test_run_on_the_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    spec = write_spec(tmp_path)
    res = invoke("--json", "run", str(spec), "--input", "sparrow", "--input", "mango")
    assert res.exit_code == 0, res.output
    outputs = json.loads(res.stdout)["outputs"]
    assert [r["input"] for r in outputs] == ["sparrow", "mango"]
    assert all(r["output"] in ("blue", "red") for r in outputs)
