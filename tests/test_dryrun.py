"""Dry runs: predicted calls and tokens without calling a model, cold and warm caches."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from helpers import ONE_LAYER, TWO_LAYERS, colour_rules, standin, write_spec  # noqa: F401
from standin import StandIn, _h

import dlnflow
from dlnflow.backends.base import Request
from dlnflow.cache import CallCache
from dlnflow.compiler import compile_spec
from dlnflow.dryrun import PlanCache, PlanningBackend, RunPlan, plan_network, plan_pipeline
from dlnflow.experiments import matrix_for
from dlnflow.sweep import Sweep


def distinct_text(r: Request) -> str:
    text = f"{r.prompt}|{r.seed}|{r.sample}|{r.temperature}"
    return "rule " + hashlib.sha256(text.encode()).hexdigest()[:8]


def prompt_sensitive() -> StandIn:
    """A stand-in whose scores depend on the prompt (as a real model's do) and whose samples differ."""
    return StandIn(
        gen=distinct_text,
        score=lambda prompt, target: [-(_h(prompt, w) % 100) / 50 for w in target.split()] or [0.0],
        cls=lambda prompt, verbs: [-(_h(prompt, v) % 1000) / 250.0 for v in verbs],
    )


def plan_then_train(spec: Path, cache: Path) -> tuple[RunPlan, dict]:
    with dlnflow.load(spec, cache_dir=cache) as net:
        plan = plan_network(net)
        return plan, net.train(prediction=plan.predicted()).as_dict()


@pytest.mark.parametrize(("model", "method", "iterations"), [
    ("colour", "dln1", 3), ("sensitive", "dln1", 4), ("sensitive", "vi", 3), ("sensitive", "ape", 1),
])
def test_cold_cache_prediction_is_within_ten_percent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     model: str, method: str, iterations: int) -> None:
    backend = colour_rules(StandIn()) if model == "colour" else prompt_sensitive()
    monkeypatch.setattr("dlnflow.network.make_backend", lambda settings, base: backend)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, method=method, iterations=iterations,
                      layers=TWO_LAYERS if method == "vi" else ONE_LAYER)
    plan, actual = plan_then_train(spec, tmp_path / "cache")
    assert sum(backend.calls.values()) == actual["backend_calls"] > 0  # planning called nothing
    assert plan.new_calls == pytest.approx(actual["backend_calls"], rel=0.10)
    assert plan.cached_calls == 0 and not plan.exact
    assert actual["predicted"]["backend_calls"] == plan.new_calls


def test_warm_cache_predicts_exactly_zero_and_replays_exactly(standin: StandIn, tmp_path: Path) -> None:  # noqa: F811
    spec = write_spec(tmp_path, iterations=3)
    _, first = plan_then_train(spec, tmp_path / "cache")
    plan, again = plan_then_train(spec, tmp_path / "cache")
    assert plan.new_calls == 0 and plan.exact and again["backend_calls"] == 0
    assert plan.new_prompt_tokens == plan.new_completion_tokens == 0
    assert plan.cache_hits == again["cache_hits"]
    assert plan.cached_calls == first["backend_calls"]  # every distinct call of the first run
    assert plan.cached_tokens == first["prompt_tokens"] + first["completion_tokens"]


def test_partly_warm_cache_counts_only_the_new_iterations(standin: StandIn, tmp_path: Path) -> None:  # noqa: F811
    spec = write_spec(tmp_path, iterations=2)
    plan_then_train(spec, tmp_path / "cache")
    with dlnflow.load(spec, cache_dir=tmp_path / "cache") as net:
        net.override(iterations=3)
        plan = plan_network(net)
        actual = net.train().as_dict()
    assert plan.cached_calls > 0 and plan.new_calls > 0
    assert plan.new_calls == pytest.approx(actual["backend_calls"], rel=0.10)


def test_a_dry_run_writes_nothing(standin: StandIn, tmp_path: Path) -> None:  # noqa: F811
    spec = write_spec(tmp_path)
    with dlnflow.load(spec, cache_dir=tmp_path / "cache") as net:
        state = net.state()
        plan = plan_network(net)
        assert net.state() == state  # prompts restored
        assert plan.new_calls > 0
        assert len(net.client.cache) == 0
        assert net.client.usage.backend_calls == 0
    assert sum(standin.calls.values()) == 0
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tiny.lock.yaml").exists()


def test_placeholders() -> None:
    words = StandIn()
    p = PlanningBackend(words)
    gen = p.run([Request("generate", "a b c", max_tokens=9), Request("generate", "a b d", max_tokens=9)])
    assert [g["completion_tokens"] for g in gen] == [5, 5]
    assert len(gen[0]["text"].split()) == 5 and gen[0]["text"] != gen[1]["text"]
    assert p.completion_max == 18
    cls = p.run([Request("classify", "x y", targets=(" a", " b", " c"))])[0]
    assert math.isclose(sum(cls["probs"]), 1.0) and len(set(cls["probs"])) == 3
    assert cls["prompt_tokens"] == 2 + 3
    score = p.run([Request("score", "x", targets=(" two words",))])[0]
    assert len(score["logprobs"]) == 2 and all(v < 0 for v in score["logprobs"])
    steady = PlanningBackend(words, steady=True)
    assert steady.run([Request("classify", "x", targets=(" a", " b"))])[0]["probs"] == [0.5, 0.5]
    assert steady.run([Request("score", "x", targets=(" t",))])[0]["logprobs"] == [0.0]
    assert sum(words.calls.values()) == 0


def test_plan_cache_reads_but_never_writes(tmp_path: Path) -> None:
    store = CallCache(tmp_path / "c")
    store.put("k1", {"text": "cached", "prompt_tokens": 3, "completion_tokens": 2})
    view = PlanCache(store)
    assert view.get("k1")["text"] == "cached" and view.get("k1") is not None
    view.put_many([("k2", {"text": "placeholder"})])
    assert "k2" in view and "k2" not in store and len(store) == 1
    assert view.real == {"k1"} and view.real_prompt_tokens == 3 and view.real_completion_tokens == 2
    store.close()


def test_price_table_turns_tokens_into_money(standin: StandIn, tmp_path: Path,  # noqa: F811
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dlnflow.dryrun.light_backend", lambda settings, base: standin)
    spec = write_spec(tmp_path)
    priced = "local: {backend: llamacpp, price: {prompt_per_1k: 0.5, completion_per_1k: 2}}"
    spec.write_text(spec.read_text().replace("local: {backend: llamacpp}", priced))
    base = compile_spec(spec)
    plan = Sweep(base, matrix_for(base)[0], tmp_path / "cache").plan()
    d = plan.as_dict()
    expected = d["new"]["prompt_tokens"] / 1000 * 0.5 + d["new"]["completion_tokens"] / 1000 * 2
    assert d["cost"]["new"] == pytest.approx(expected) and expected > 0
    assert d["cost"]["new_max"] >= d["cost"]["new"]
    assert d["new"]["calls_if_steady"] <= d["new"]["calls"]
    assert any(n.startswith("estimate") for n in d["notes"])
    assert sum(standin.calls.values()) == 0


# -- the real embedded model ------------------------------------------------------------------------
@pytest.mark.real
def test_real_dry_run_reads_only_the_vocabulary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                llama: object) -> None:
    from dlnflow.backends import llamacpp
    from dlnflow.dryrun import VocabOnlyLlama, light_backend

    light = light_backend({"backend": "llamacpp"}, tmp_path)
    assert isinstance(light, VocabOnlyLlama)
    assert light.identity() == llama.identity()  # type: ignore[attr-defined]
    for text in ("Input: sparrow\nAnswer:", " blue", "", "Ünïcode and 12345 digits."):
        assert light.count_tokens(text) == llama.count_tokens(text)  # type: ignore[attr-defined]
    pool_before = dict(llamacpp._POOL)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, iterations=1)
    base = compile_spec(spec)
    plan = Sweep(base, matrix_for(base)[0], tmp_path / "cache").plan()
    assert plan.total("new_calls") > 0 and plan.total("new_prompt_tokens") > 0
    assert pool_before == llamacpp._POOL  # no model weights were loaded for the dry run


@pytest.mark.real
def test_real_cold_then_warm_prediction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, iterations=1)
    cold, actual = plan_then_train(spec, tmp_path / "cache")
    # one iteration: whether the prompt changes (and dev and test are evaluated again) is a coin the
    # plan cannot see, so only a loose bound holds here; quickstart numbers are in the report
    assert cold.new_calls == pytest.approx(actual["backend_calls"], rel=0.5)
    warm, again = plan_then_train(spec, tmp_path / "cache")
    assert warm.new_calls == 0 == again["backend_calls"] and warm.exact
    with dlnflow.load(spec, cache_dir=tmp_path / "cache") as net:
        view = PlanCache(net.client.cache)
        low = plan_pipeline("steady", net.pipeline, net.dataset, net.client.models, view, steady=True)
    assert low.new_calls == 0


def test_without_the_cache_every_repeat_is_a_new_call(standin: StandIn, tmp_path: Path) -> None:  # noqa: F811
    spec = write_spec(tmp_path, iterations=2)
    plan_then_train(spec, tmp_path / "cache")
    with dlnflow.load(spec, cache_dir=tmp_path / "cache", cache_mode="refresh") as net:
        plan = plan_network(net)
        actual = net.train().as_dict()
    assert plan.cached_calls == 0 and plan.cache_hits == 0
    assert plan.new_calls == pytest.approx(actual["backend_calls"], rel=0.10)
