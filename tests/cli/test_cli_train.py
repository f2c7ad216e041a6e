"""``dlnflow train`` through click's CliRunner: one run, sweeps, --dry-run, bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from helpers import write_spec
from standin import StandIn

from dlnflow.cli import cli

RUN_KEYS = {"backend_calls", "cache_hits", "prompt_tokens", "completion_tokens", "wall_seconds", "metrics",
            "lock"}


@pytest.fixture()
def model(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """The stand-in for training and for dry runs."""
    monkeypatch.setattr("dlnflow.planning.sweep.light_backend", lambda settings, base: standin)
    return standin


def train(*args: str) -> Result:
    return CliRunner().invoke(cli, ["--json", "train", *args])


def calls(model: StandIn) -> int:
    return sum(model.calls.values())


def test_single_run_json_keys_and_prediction(model: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    result = train(str(spec))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) >= RUN_KEYS
    assert out["backend_calls"] == calls(model) > 0
    assert set(out["metrics"]) == {"dev", "test", "dev_before", "test_before"}
    assert Path(out["lock"]) == tmp_path / "tiny.lock.yaml" and Path(out["lock"]).exists()
    assert out["predicted"]["backend_calls"] == pytest.approx(out["backend_calls"], rel=0.10)
    again = json.loads(train(str(spec)).stdout)
    assert again["backend_calls"] == 0 and again["predicted"] == {**again["predicted"], "backend_calls": 0,
                                                                  "exact": True}


def test_single_run_text_output(model: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    result = CliRunner().invoke(cli, ["train", str(spec)])
    assert result.exit_code == 0, result.output
    assert "dev accuracy:" in result.stdout and "predicted (estimate):" in result.stdout
    assert "predicted:" in result.stderr
    again = CliRunner().invoke(cli, ["train", str(spec)])
    assert "predicted (exact): 0 calls" in again.stdout


def test_sweep_json_and_rerun(model: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    args = [str(spec), "--seeds", "1,2,3", "--set", "train.prompt_candidates=3,4",
            "--set", "train.iterations=1"]
    result = train(*args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) >= RUN_KEYS and out["sweep"] is True
    assert len(out["runs"]) == 6 and not any(r["skipped"] for r in out["runs"])
    assert out["backend_calls"] == calls(model) == sum(r["backend_calls"] for r in out["runs"])
    assert [p["settings"]["train.prompt_candidates"] for p in out["points"]] == [3, 4]
    assert out["points"][0]["metrics"]["dev"]["n"] == 3
    lock = yaml.safe_load(Path(out["lock"]).read_text())
    assert lock["sweep"]["fixed"] == {"train.iterations": 1} and lock["train"]["iterations"] == 1
    assert out["metrics"] == lock["metrics"]
    again = json.loads(train(*args).stdout)
    assert again["backend_calls"] == 0 and all(r["skipped"] for r in again["runs"])
    status = CliRunner().invoke(cli, ["--json", "status", str(spec)])
    assert json.loads(status.stdout)["clean"] is True


def test_sweep_from_the_spec_experiments_section(model: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=1)
    experiments = "experiments:\n  seeds: [4, 5]\n  grid: {loss: [exact_match, contains]}\n"
    spec.write_text(spec.read_text() + experiments)
    out = json.loads(train(str(spec)).stdout)
    assert [(r["seed"], r["settings"]["loss"]) for r in out["runs"]] == [
        (4, "exact_match"), (5, "exact_match"), (4, "contains"), (5, "contains")]
    assert len({r["run_dir"] for r in out["runs"]}) == 4
    only = json.loads(train(str(spec), "--seed", "5").stdout)  # --seed picks one of the sweep's seeds
    assert [r["seed"] for r in only["runs"]] == [5, 5] and all(r["skipped"] for r in only["runs"])


def test_dry_run_cold_and_warm(model: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    cold = train(str(spec), "--dry-run")
    assert cold.exit_code == 0, cold.output
    plan = json.loads(cold.stdout)
    assert plan["dry_run"] is True and plan["exact"] is False
    assert plan["new"]["calls"] > 0 and plan["cached"]["calls"] == 0
    assert calls(model) == 0 and not (tmp_path / "tiny.lock.yaml").exists()
    actual = json.loads(train(str(spec)).stdout)
    assert plan["new"]["calls"] == pytest.approx(actual["backend_calls"], rel=0.10)
    warm = json.loads(train(str(spec), "--dry-run").stdout)
    assert warm["new"]["calls"] == 0 and warm["exact"] is True
    assert warm["cached"]["calls"] == actual["backend_calls"]
    text = CliRunner().invoke(cli, ["train", str(spec), "--dry-run"]).stdout
    assert "backend calls: 0 new" in text and "replays for free (exact)" in text


def test_dry_run_of_a_sweep_and_budget_warning(model: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    args = [str(spec), "--seeds", "1,2", "--set", "train.prompt_candidates=3,4"]
    out = json.loads(train(*args, "--dry-run", "--max-calls", "10").stdout)
    assert len(out["runs"]) == 4 and out["new"]["calls"] > 10
    assert any("budget of 10 calls" in w for w in out["warnings"])
    assert calls(model) == 0
    train(*args)
    warm = json.loads(train(*args, "--dry-run").stdout)
    assert warm["new"]["calls"] == 0 and all(r["skipped"] for r in warm["runs"])


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "train.iteration=3"], "no such setting"),
    (["--set", "train.iterations"], "expected SETTING=VALUE"),
    (["--seeds", "1,x"], "not an integer"),
    (["--set", "train.batch_size=0,2"], "train.batch_size=0"),
])
def test_bad_options_exit_2(model: StandIn, tmp_path: Path, args: list[str], message: str) -> None:
    spec = write_spec(tmp_path)
    result = CliRunner().invoke(cli, ["train", str(spec), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert calls(model) == 0


def test_seed_and_seeds_exclude_each_other(model: StandIn, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", str(write_spec(tmp_path)), "--seed", "1", "--seeds", "2,3"])
    assert result.exit_code == 2 and "exclude each other" in result.output
