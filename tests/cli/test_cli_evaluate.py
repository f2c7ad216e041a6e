"""``dlnflow eval`` through CliRunner: learned vs initial prompts, drift, JSON, the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import write_spec
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
    assert cold["n"] == 8 and cold["backend_calls"] == 8 and 0.0 <= cold["accuracy"] <= 1.0
    warm = json.loads(invoke("--json", "eval", str(spec), "--split", "dev").stdout)
    assert warm["backend_calls"] == 0 and warm["cache_hits"] == 8
    assert warm["accuracy"] == cold["accuracy"]
