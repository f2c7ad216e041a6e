"""``dlnflow results``: mean, standard deviation and t interval per grid point, as markdown and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from helpers import write_spec
from standin import StandIn, _h

from dlnflow.cli import cli

SWEEP = ["--seeds", "1,2,3", "--set", "train.prompt_candidates=3,4"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture()
def trained(standin: StandIn, tmp_path: Path) -> tuple[Path, dict]:
    """A sweep whose seeds end differently: the stand-in's class scores depend on the whole prompt."""
    standin.cls = lambda prompt, verbs: [-(_h(prompt, v) % 1000) / 250.0 for v in verbs]
    spec = write_spec(tmp_path)
    result = invoke("--json", "train", str(spec), *SWEEP)
    assert result.exit_code == 0, result.output
    return spec, json.loads(result.stdout)


def test_results_json_matches_the_runs(trained: tuple[Path, dict], standin: StandIn) -> None:
    spec, train = trained
    before = sum(standin.calls.values())
    result = invoke("--json", "results", str(spec), *SWEEP)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert sum(standin.calls.values()) == before  # reading results calls no model
    assert out["missing"] == 0 and len(out["points"]) == 2
    for point in out["points"]:
        runs = [r for r in train["runs"] if r["settings"] == point["settings"]]
        for metric in ("dev", "test", "dev_before", "test_before"):
            values = [r["metrics"][metric] for r in runs]
            got = point["metrics"][metric]
            assert got["n"] == 3 and got["mean"] == pytest.approx(np.mean(values), abs=1e-6)
            assert got["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
            half = 4.302653 * np.std(values, ddof=1) / math.sqrt(3)
            assert got["ci_high"] - got["ci_low"] == pytest.approx(2 * half, abs=1e-5)
    assert any(p["metrics"]["dev"]["std"] > 0 for p in out["points"])  # the seeds really differ
    assert out["best"]["settings"] == train["best"]["settings"]


def test_results_markdown_and_the_lock_s_sweep(trained: tuple[Path, dict]) -> None:
    spec, _ = trained
    result = invoke("results", str(spec))  # no options: the sweep recorded in the lock
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "| settings | seeds | dev (%) | test (%) | dev_before (%) | test_before (%) |"
    assert lines[2].startswith("| train.prompt_candidates=3 | 1,2,3 | ")
    assert lines[3].startswith("| train.prompt_candidates=4 | 1,2,3 | ")
    assert "95% t confidence interval" in result.stdout and "best by mean dev:" in result.stdout


def test_unfinished_runs_are_listed_as_missing(trained: tuple[Path, dict]) -> None:
    spec, train = trained
    Path(train["runs"][1]["run_dir"], "summary.json").unlink()
    out = json.loads(invoke("--json", "results", str(spec), *SWEEP).stdout)
    assert out["missing"] == 1 and out["points"][0]["missing"] == [2]
    assert out["points"][0]["metrics"]["dev"]["n"] == 2
    text = invoke("results", str(spec), *SWEEP).stdout
    assert "1,3 (missing 2)" in text and "1 run(s) not finished" in text


def test_no_finished_runs_is_an_input_error(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    result = invoke("results", str(spec), "--seeds", "7,8")
    assert result.exit_code == 2
    assert "no finished run" in result.stderr and "dlnflow train" in result.stderr
    assert invoke("results", str(tmp_path / "absent.yaml")).exit_code == 2
