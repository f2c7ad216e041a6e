"""Dry runs of layers that learn demonstrations: the swaps are counted like any other candidate."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ONE_LAYER, TWO_LAYERS, write_spec
from standin import StandIn
from test_dryrun import plan_then_train, prompt_sensitive, with_bounds

DEMOS = "    demos: {k: 2}\n"


@pytest.mark.parametrize(("method", "iterations"), [("dln1", 4), ("vi", 3)])
def test_cold_prediction_with_demonstrations_brackets_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              method: str, iterations: int) -> None:
    # the swaps' calls fall inside the plan's range; the steering mutation is caught by the last test
    backend = prompt_sensitive()
    monkeypatch.setattr("dlnflow.training.network.make_backend", lambda settings, base: backend)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, method=method, iterations=iterations,
                      layers=(TWO_LAYERS if method == "vi" else ONE_LAYER) + DEMOS)
    bounds = with_bounds(spec, tmp_path / "cache")
    plan, actual = plan_then_train(spec, tmp_path / "cache")
    assert sum(backend.calls.values()) == actual["backend_calls"] > 0
    assert bounds.calls_never <= actual["backend_calls"] <= bounds.calls_always
    assert bounds.calls_never < plan.new_calls < bounds.calls_always
    if method == "vi":
        assert plan.new_calls == pytest.approx(actual["backend_calls"], rel=0.10)
    # DLN-1 here: with random scores over 1 current + 2 candidates the pair changes at almost every
    # step, so the run sits near the "always" bound (101 calls against 109; the expected plan says 89)


def test_warm_cache_with_demonstrations_predicts_zero(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=3, layers=ONE_LAYER + DEMOS)
    _, first = plan_then_train(spec, tmp_path / "cache")
    plan, again = plan_then_train(spec, tmp_path / "cache")
    assert first["backend_calls"] > 0
    assert plan.new_calls == 0 and plan.exact and again["backend_calls"] == 0
    assert plan.cached_calls == first["backend_calls"]


def test_a_pair_that_never_changes_is_the_lower_bound_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # mutation tried: the plan's steering not restoring the demonstrations with the prompt put the
    # "never" bound above this run
    backend = StandIn(cls=lambda prompt, verbs: [0.0 for _ in verbs])  # every candidate ties: the current one stays
    monkeypatch.setattr("dlnflow.training.network.make_backend", lambda settings, base: backend)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, iterations=3, layers=ONE_LAYER + DEMOS)
    bounds = with_bounds(spec, tmp_path / "cache")
    _, actual = plan_then_train(spec, tmp_path / "cache")
    assert actual["backend_calls"] > 0
    assert bounds.calls_never == actual["backend_calls"]
