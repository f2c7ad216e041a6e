"""``dlnflow eval`` through CliRunner: learned vs initial prompts, drift, JSON, the real model (``--strict`` too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from helpers import recheck_accuracy, write_spec
from real_runs import TrainedRun
from standin import StandIn

from dlnflow.cli import cli


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def trained(folder: Path) -> tuple[Path, dict]:
    spec = write_spec(folder)
    res = invoke("--json", "train", str(spec))
    assert res.exit_code == 0, res.output
    return spec, json.loads(res.stdout)["metrics"]


def test_eval_uses_the_lock_and_matches_training(standin: StandIn, tmp_path: Path) -> None:
    spec, metrics = trained(tmp_path)
    res = invoke("--json", "eval", str(spec))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["split"] == "test" and out["n"] == 8
    assert out["accuracy"] == pytest.approx(metrics["test"])
    assert out["backend_calls"] == 0  # training evaluated the same prompts on test: all cached
    assert out["lock_note"].startswith("using learned prompts from tiny.lock.yaml")
    initial = json.loads(invoke("--json", "eval", str(spec), "--initial").stdout)
    assert initial["accuracy"] == pytest.approx(metrics["test_before"])
    dev = json.loads(invoke("--json", "eval", str(spec), "--split", "dev").stdout)
    assert dev["n"] == 8 and dev["accuracy"] == pytest.approx(metrics["dev"])


def test_eval_text_output_and_no_lock(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    res = invoke("eval", str(spec))
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("test accuracy: ") and "/8)" in res.stdout
    assert "no lock file at tiny.lock.yaml" in res.stderr
    assert "no lock file" not in invoke("-q", "eval", str(spec)).stderr


def test_eval_on_a_drifted_lock_warns_and_strict_refuses(standin: StandIn, tmp_path: Path) -> None:
    spec, _ = trained(tmp_path)
    spec.write_text(spec.read_text().replace("batch_size: 4", "batch_size: 5"))
    res = invoke("eval", str(spec))
    assert res.exit_code == 0, res.output
    assert "warning: using learned prompts from tiny.lock.yaml, but it drifted" in res.stderr
    lock_before = (tmp_path / "tiny.lock.yaml").read_bytes()
    strict = invoke("eval", str(spec), "--strict")
    assert strict.exit_code == 2
    assert "does not match the spec (--strict)" in strict.stderr and "Traceback" not in strict.output
    assert (tmp_path / "tiny.lock.yaml").read_bytes() == lock_before


@pytest.mark.real
def test_eval_on_the_real_model_is_cached_the_second_time(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    spec = write_spec(tmp_path)
    first = invoke("--json", "eval", str(spec), "--split", "dev")
    assert first.exit_code == 0, first.output
    cold = json.loads(first.stdout)
    assert cold["n"] == 8 and cold["backend_calls"] == 8
    assert recheck_accuracy(spec, "dev") == pytest.approx(cold["accuracy"], abs=1e-6)
    warm = json.loads(invoke("--json", "eval", str(spec), "--split", "dev").stdout)
    assert warm["backend_calls"] == 0 and warm["cache_hits"] == 8
    assert warm["accuracy"] == cold["accuracy"]


# -- --strict on the real model, with the lock of the shared APE run (tests/real_runs.py) -------------------
def cache_entries(folder: Path) -> int:
    from dlnflow.runtime.cache import CallCache

    with CallCache(folder) as cache:
        return len(cache)


def strict_eval(run: TrainedRun) -> Result:
    return invoke("--json", "--cache-dir", str(run.cache), "eval", str(run.spec), "--strict")


@pytest.mark.real
def test_eval_strict_on_the_real_model_accepts_the_lock_it_fits(ape_run: TrainedRun, tmp_path: Path) -> None:
    run = ape_run.copy_to(tmp_path / "run")
    res = strict_eval(run)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["lock_note"] == "using learned prompts from quickstart-ape.lock.yaml"  # nothing drifted
    lock = yaml.safe_load(run.lock.read_text(encoding="utf-8"))
    assert lock["models"]["local"]["sha256"]  # the real GGUF's identity was compared, and matched
    assert out["n"] == 4 and out["accuracy"] == pytest.approx(lock["metrics"]["test"], abs=1e-6)
    assert out["backend_calls"] == 0 and out["cache_hits"] == 4  # the learned prompt's answers from training


@pytest.mark.real
@pytest.mark.parametrize("drift", ["spec", "lock"])
def test_eval_strict_on_the_real_model_refuses_a_lock_that_does_not_fit(ape_run: TrainedRun, tmp_path: Path,
                                                                        drift: str) -> None:
    run = ape_run.copy_to(tmp_path / "run")
    if drift == "spec":  # the data split moved since training
        text = run.spec.read_text(encoding="utf-8")
        run.spec.write_text(text.replace("test: 4, seed: 42}", "test: 4, seed: 7}"), encoding="utf-8")
        named = "data split seed: 42 -> 7"
    else:  # the lock was trained on another model file than the one the spec now loads
        text = run.lock.read_text(encoding="utf-8")
        sha = yaml.safe_load(text)["models"]["local"]["sha256"]
        run.lock.write_text(text.replace(sha, "0" * len(sha)), encoding="utf-8")
        named = "model 'local' identity changed: sha256"
    lock_before, entries_before = run.lock.read_bytes(), cache_entries(run.cache)
    res = strict_eval(run)
    assert res.exit_code == 2, res.output
    error = json.loads(res.stdout)
    assert error["exit_code"] == 2 and "quickstart-ape.lock.yaml does not match the spec (--strict)" in error["message"]
    assert named in error["message"] and "Traceback" not in res.output
    assert run.lock.read_bytes() == lock_before and cache_entries(run.cache) == entries_before  # no model call
    lenient = invoke("--json", "--cache-dir", str(run.cache), "eval", str(run.spec))  # without --strict: a warning
    assert lenient.exit_code == 0 and "but it drifted: " in json.loads(lenient.stdout)["lock_note"]
