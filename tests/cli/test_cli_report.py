"""``dlnflow report`` through click's CliRunner: run folders, specs, --out, --json, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import write_spec
from standin import StandIn
from reporting import PNG_MAGIC, check_png, fabricate

from dlnflow.cli import cli


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_report_of_a_run_folder_writes_into_it(tmp_path: Path) -> None:
    run = fabricate(tmp_path)
    res = invoke("report", str(run))
    assert res.exit_code == 0, res.output
    assert f"report: {run / 'report.md'}" in res.stdout
    assert "dev accuracy:  25.0% before -> 75.0% after (3 validation points)" in res.stdout
    assert (run / "learning_curve.png").read_bytes()[:8] == PNG_MAGIC
    assert "| 4 | 75.0% | best, kept |" in (run / "report.md").read_text()


def test_out_and_json(tmp_path: Path) -> None:
    run = fabricate(tmp_path)
    out = tmp_path / "elsewhere"
    res = invoke("--json", "report", str(run), "--out", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["report"] == str(out / "report.md")
    assert data["learning_curve"] == str(out / "learning_curve.png")
    assert [v["iteration"] for v in data["validation"]] == [0, 2, 4]
    assert data["metrics"]["test"] == 0.7
    assert data["tokens_saved"] == 127
    assert data["prompts_before"] == {"answer": "Pick one."}
    check_png(out / "learning_curve.png")
    assert not (run / "report.md").exists()


def test_spec_never_trained_exits_2(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    res = invoke("report", str(spec))
    assert res.exit_code == 2
    assert "train first: dlnflow train" in res.stderr
    assert "Traceback" not in res.output


@pytest.mark.parametrize("args, message", [
    (("report", "{tmp}/nothing-here"), "no such run folder or spec"),
    (("report", "{tmp}"), "is not a run folder"),
    (("report", "{run}", "--seed", "3"), "do not apply to a run folder"),
])
def test_bad_targets_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    run = fabricate(tmp_path / "r")
    res = invoke(*[a.format(tmp=tmp_path, run=run) for a in args])
    assert res.exit_code == 2
    assert message in res.stderr


def test_train_then_report_the_spec(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=2)
    assert invoke("train", str(spec)).exit_code == 0
    res = invoke("report", str(spec))
    assert res.exit_code == 0, res.output
    run = Path(res.stdout.split("report: ", 1)[1].split("\n", 1)[0]).parent
    text = (run / "report.md").read_text()
    assert text.count("| initial prompts |") == 1
    assert "| 1 |" in text and "| 2 |" in text
    check_png(run / "learning_curve.png")
    # the run of an overridden iteration count is found with the same override
    assert invoke("train", str(spec), "--iterations", "1").exit_code == 0
    res = invoke("--json", "report", str(spec), "--iterations", "1")
    assert res.exit_code == 0, res.output
    assert [v["iteration"] for v in json.loads(res.stdout)["validation"]] == [0, 1]


@pytest.mark.real
def test_report_of_a_real_model_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, iterations=1)
    trained = invoke("--cache-dir", str(tmp_path / "cache"), "train", str(spec))
    assert trained.exit_code == 0, trained.output
    res = invoke("--json", "report", str(spec))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [v["iteration"] for v in data["validation"]] == [0, 1]
    assert all(0.0 <= v["dev"] <= 1.0 for v in data["validation"])
    assert data["usage"]["backend_calls"] > 0
    assert len(data["objectives"]["answer"]) == 1
    assert all(o["objective"] < 0 for o in data["objectives"]["answer"])  # mean log-probabilities
    check_png(Path(data["learning_curve"]))
