"""The training loop end to end on the stand-in model, plus one short run on the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import TWO_LAYERS, write_spec
from standin import StandIn

import dlnflow
from dlnflow.core.errors import BudgetExceeded


def train(spec: Path, **kw: object) -> dict:
    with dlnflow.load(spec, **kw) as net:
        return net.train().as_dict()


def test_warm_rerun_makes_no_calls_and_same_lock(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    first = train(spec)
    lock1 = (tmp_path / "tiny.lock.yaml").read_bytes()
    assert first["backend_calls"] > 0
    second = train(spec)
    assert second["backend_calls"] == 0
    assert second["cache_hits"] > 0
    assert (tmp_path / "tiny.lock.yaml").read_bytes() == lock1
    assert second["metrics"] == first["metrics"]


def test_lock_records_learned_prompt_and_metrics(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=3)
    result = train(spec)
    lock = yaml.safe_load((tmp_path / "tiny.lock.yaml").read_text())
    assert lock["schema"] == 1
    assert lock["layers"]["answer"]["prompt"] == result["prompts"]["answer.prompt"]
    assert lock["metrics"]["test"] == pytest.approx(result["metrics"]["test"])
    # the stand-in answers right once the prompt shows an example: training must find that
    assert result["metrics"]["dev"] > result["metrics"]["dev_before"]
    assert "Answer: " in result["prompts"]["answer.prompt"]


def test_run_log_has_a_line_per_iteration(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=2)
    result = train(spec)
    lines = [json.loads(x) for x in (Path(result["run_dir"]) / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [0, 1, 2]
    assert all("candidates" in r["layers"]["answer"] for r in lines[1:])
    assert all("dev" in r for r in lines[1:])  # validate_every: 1
    assert not (Path(result["run_dir"]) / "log.jsonl.partial").exists()
    summary = json.loads((Path(result["run_dir"]) / "summary.json").read_text())
    assert summary["metrics"] == result["metrics"]


@pytest.mark.parametrize("method", ["none", "fewshot", "ape"])
def test_baselines_run_in_the_same_harness(standin: StandIn, tmp_path: Path, method: str) -> None:
    spec = write_spec(tmp_path, method=method)
    result = train(spec)
    assert result["iterations_run"] == 0
    if method == "none":
        assert result["prompts"]["answer.prompt"] == "Say blue or red."
    if method == "fewshot":
        assert result["prompts"]["answer.prompt"].count("Answer: ") == 5


def test_vi_trains_both_layers(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, method="vi", layers=TWO_LAYERS)
    result = train(spec)
    lines = [json.loads(x) for x in (Path(result["run_dir"]) / "log.jsonl").read_text().splitlines()]
    assert set(lines[1]["layers"]) == {"think", "answer"}
    assert "posterior" in lines[1]["layers"]["think"]


def test_budget_stops_before_exceeding_and_rerun_continues(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=2)
    with dlnflow.load(spec) as net:
        net.override(budget=type(net.pipeline.train.budget)(max_calls=10, max_tokens=None))
        with pytest.raises(BudgetExceeded):
            net.train()
        assert net.client.usage.backend_calls <= 10
    assert not (tmp_path / "tiny.lock.yaml").exists()
    result = train(spec)
    full = train(spec)
    assert full["backend_calls"] == 0
    assert result["backend_calls"] > 0


@pytest.mark.real
def test_short_training_on_the_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, iterations=1)
    result = train(spec, cache_dir=tmp_path / "cache")
    assert result["backend_calls"] > 0
    assert 0.0 <= result["metrics"]["test"] <= 1.0
    again = train(spec, cache_dir=tmp_path / "cache")
    assert again["backend_calls"] == 0
    assert again["prompts"] == result["prompts"]
