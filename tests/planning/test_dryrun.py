"""Dry runs: predicted calls and tokens without calling a model, cold and warm caches."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from helpers import ONE_LAYER, TWO_LAYERS, colour_rules, write_spec
from standin import StandIn, _h

import dlnflow
from dlnflow.core.backend import Request
from dlnflow.experiments.matrix import matrix_for
from dlnflow.experiments.sweep import Sweep
from dlnflow.graph.templates import backward
from dlnflow.planning.backends import is_rewrite
from dlnflow.planning.dryrun import PlanCache, PlanningBackend, RunPlan, plan_network, plan_pipeline, scenario_caches
from dlnflow.planning.scenarios import ALWAYS, EXPECTED, LOST_REWRITES, NEVER, Scenario
from dlnflow.planning.sweep import plan_sweep
from dlnflow.runtime.cache import CallCache
from dlnflow.spec.compiler import compile_spec


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


def with_bounds(spec: Path, cache: Path) -> RunPlan:
    with dlnflow.load(spec, cache_dir=cache) as net:
        return plan_network(net, bounds=True)


@pytest.mark.parametrize(("model", "method", "iterations"), [
    ("colour", "dln1", 3), ("sensitive", "dln1", 4), ("sensitive", "vi", 3),
])
def test_cold_cache_prediction_is_within_ten_percent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     model: str, method: str, iterations: int) -> None:
    backend = colour_rules(StandIn()) if model == "colour" else prompt_sensitive()
    monkeypatch.setattr("dlnflow.training.network.make_backend", lambda settings, base: backend)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, method=method, iterations=iterations,
                      layers=TWO_LAYERS if method == "vi" else ONE_LAYER)
    bounds = with_bounds(spec, tmp_path / "cache")
    plan, actual = plan_then_train(spec, tmp_path / "cache")
    assert sum(backend.calls.values()) == actual["backend_calls"] > 0  # planning called nothing
    assert plan.new_calls == pytest.approx(actual["backend_calls"], rel=0.10)
    assert plan.cached_calls == 0 and not plan.exact
    assert actual["predicted"]["backend_calls"] == plan.new_calls == bounds.new_calls
    assert bounds.calls_never <= actual["backend_calls"] <= bounds.calls_always


def test_a_single_decision_is_one_of_the_bounds_and_expected_halfway(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """APE decides once: it keeps the prompt (the `never` plan) or takes a new one (the `always` plan)."""
    backend = prompt_sensitive()
    monkeypatch.setattr("dlnflow.training.network.make_backend", lambda settings, base: backend)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, method="ape", iterations=1)
    plan = with_bounds(spec, tmp_path / "cache")
    _, actual = plan_then_train(spec, tmp_path / "cache")
    assert actual["backend_calls"] in (plan.calls_never, plan.calls_always)
    assert plan.calls_never < plan.calls_always
    assert plan.new_calls == (plan.calls_never + plan.calls_always + 1) // 2
    assert plan.validations == (0.5, 1)


def copying() -> StandIn:
    """A stand-in like a small model: every rewrite writes the current instruction out again, and its
    scores ignore the prompt (so the current prompt always wins and is never replaced)."""

    def gen(r: Request) -> str:
        if "Current instruction:\n" in r.prompt:
            return r.prompt.split("Current instruction:\n", 1)[1].split("\n\n", 1)[0]
        return distinct_text(r)

    return StandIn(gen=gen, score=lambda prompt, target: [-1.0] * len(target.split()),
                   cls=lambda prompt, verbs: [0.0] * len(verbs))


@pytest.mark.parametrize(("method", "layers"), [("dln1", ONE_LAYER), ("vi", TWO_LAYERS)], ids=["dln1", "vi"])
def test_rewrites_that_add_no_candidate_are_predicted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      method: str, layers: str) -> None:
    backend = copying()
    monkeypatch.setattr("dlnflow.training.network.make_backend", lambda settings, base: backend)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, method=method, iterations=3, layers=layers)
    monkeypatch.setitem(LOST_REWRITES, "standin", 0.0)
    unaware = with_bounds(spec, tmp_path / "cache")
    monkeypatch.setitem(LOST_REWRITES, "standin", 1.0)  # what this backward model does
    aware = with_bounds(spec, tmp_path / "cache")
    _, actual = plan_then_train(spec, tmp_path / "cache")
    assert actual["prompts"] == {f"{name}.prompt": p for name, p in initial_prompts(spec).items()}
    assert aware.calls_never == actual["backend_calls"]  # prompts never change here: exact
    assert unaware.calls_never > actual["backend_calls"]  # without the mechanism: every rewrite scored
    assert aware.rewrites[0] == aware.rewrites[1] > 0 and unaware.rewrites[0] == 0
    assert aware.new_calls < unaware.new_calls


def initial_prompts(spec: Path) -> dict[str, str]:
    return {layer.name: layer.prompt for layer in compile_spec(spec).graph}


def test_scenarios_decide_only_what_placeholders_decide(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=4)  # validations after every step: four intervals
    with dlnflow.load(spec, cache_dir=tmp_path / "cache") as net:
        caches = scenario_caches(None)
        plans = {s.name: plan_pipeline("c", net.pipeline, net.dataset, net.client.models, caches[s.name],
                                       scenario=s) for s in (*EXPECTED, NEVER, ALWAYS)}
    assert [plans[s.name].validations for s in (*EXPECTED, NEVER, ALWAYS)] == [(2, 4), (2, 4), (0, 4), (4, 4)]
    assert plans["never"].new_calls < plans["alternate-last"].new_calls < plans["always"].new_calls
    assert sum(standin.calls.values()) == 0


def test_the_final_test_counts_only_as_often_as_dev_improves(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=2)  # intervals [1], [2]: "alternate-last" changes at step 2
    with dlnflow.load(spec, cache_dir=tmp_path / "cache") as net:
        sure, even = (plan_pipeline("c", net.pipeline, net.dataset, net.client.models, PlanCache(None),
                                    scenario=Scenario("s", "alternate", 0, improves)) for improves in (1.0, 0.5))
    test_size = 8  # the spec's test split: one classify call per example with the new prompt
    assert sure.validations == even.validations == (1, 2)
    assert sure.new_calls - even.new_calls == test_size // 2
    assert even.cache_hits - sure.cache_hits == test_size // 2  # a replayed test is read from the cache


def test_warm_cache_predicts_exactly_zero_and_replays_exactly(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=3)
    _, first = plan_then_train(spec, tmp_path / "cache")
    plan, again = plan_then_train(spec, tmp_path / "cache")
    assert plan.new_calls == 0 and plan.exact and again["backend_calls"] == 0
    assert plan.new_prompt_tokens == plan.new_completion_tokens == 0
    assert plan.cache_hits == again["cache_hits"]
    assert plan.cached_calls == first["backend_calls"]  # every distinct call of the first run
    assert plan.cached_tokens == first["prompt_tokens"] + first["completion_tokens"]


def test_partly_warm_cache_counts_only_the_new_iterations(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=2)
    _, first = plan_then_train(spec, tmp_path / "cache")
    with dlnflow.load(spec, cache_dir=tmp_path / "cache") as net:
        net.override(iterations=3)
        plan = plan_network(net, bounds=True)
        actual = net.train().as_dict()
    assert plan.new_calls > 0 and plan.cached_calls >= first["backend_calls"] - 8  # all but the final test
    assert plan.validations == (0.5, 1)  # the two cached steps keep their real outcome; only step 3 is planned
    assert plan.calls_never <= actual["backend_calls"] <= plan.calls_always


def test_a_dry_run_writes_nothing(standin: StandIn, tmp_path: Path) -> None:
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
    assert p.answered == 4 and p.rewrites == 0
    assert sum(words.calls.values()) == 0


def rewrite_request(prompt: str, sample: int) -> Request:
    text = backward("rewrite").render(prompt=prompt, examples=[], instruction="Make it better.")
    return Request("generate", text, max_tokens=8, temperature=0.7, seed=1, sample=sample)


def test_a_share_of_rewrites_comes_back_empty() -> None:
    p = PlanningBackend(StandIn(), lost_rewrites=1 / 3)
    hidden = backward("hidden_rewrite").render(prompt="p", examples=[], instruction="i")
    assert is_rewrite(rewrite_request("p", 1)) and is_rewrite(Request("generate", hidden))
    assert not is_rewrite(Request("generate", "Input: x\nAnswer:"))
    assert not is_rewrite(Request("classify", hidden, targets=(" a", " b")))
    texts = [p.run([rewrite_request("Say blue.", k)])[0]["text"] for k in range(1, 7)]
    assert [t == "" for t in texts] == [False, False, True, False, False, True]
    p.run([Request("generate", "a forward pass", max_tokens=4)])  # not a rewrite: never lost
    assert (p.lost, p.rewrites, p.answered) == (2, 6, 7)


def test_plan_cache_reads_but_never_writes(tmp_path: Path) -> None:
    store = CallCache(tmp_path / "c")
    store.put("k1", {"text": "cached", "prompt_tokens": 3, "completion_tokens": 2})
    view = PlanCache(store)
    assert view.get("k1")["text"] == "cached" and view.get("k1") is not None
    view.put_many([("k2", {"text": "placeholder"})])
    assert "k2" in view and "k2" not in store and len(store) == 1
    assert view.real == {"k1"} and view.real_prompt_tokens == 3 and view.real_completion_tokens == 2
    store.close()


def test_price_table_turns_tokens_into_money(standin: StandIn, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dlnflow.planning.sweep.light_backend", lambda settings, base: standin)
    spec = write_spec(tmp_path)
    priced = "local: {backend: llamacpp, price: {prompt_per_1k: 0.5, completion_per_1k: 2}}"
    spec.write_text(spec.read_text().replace("local: {backend: llamacpp}", priced))
    base = compile_spec(spec)
    plan = plan_sweep(Sweep(base, matrix_for(base)[0], tmp_path / "cache"))
    d = plan.as_dict()
    expected = d["new"]["prompt_tokens"] / 1000 * 0.5 + d["new"]["completion_tokens"] / 1000 * 2
    assert d["cost"]["new"] == pytest.approx(expected) and expected > 0
    assert d["cost"]["new_max"] >= d["cost"]["new"]
    low, high = d["new"]["calls_range"]
    assert low <= d["new"]["calls"] <= high
    assert any(n.startswith("estimate") for n in d["notes"])
    assert any(n.startswith("assumed: the prompts change before half") for n in d["notes"])
    assert sum(standin.calls.values()) == 0


# -- the real embedded model ------------------------------------------------------------------------
@pytest.mark.real
def test_real_dry_run_reads_only_the_vocabulary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                llama: object) -> None:
    from dlnflow.backends.llamacpp import backend as llamacpp
    from dlnflow.backends.llamacpp.vocab import VocabOnlyLlama
    from dlnflow.planning.backends import light_backend

    light = light_backend({"backend": "llamacpp"}, tmp_path)
    assert isinstance(light, VocabOnlyLlama)
    assert light.identity() == llama.identity()  # type: ignore[attr-defined]
    for text in ("Input: sparrow\nAnswer:", " blue", "", "Ünïcode and 12345 digits."):
        assert light.count_tokens(text) == llama.count_tokens(text)  # type: ignore[attr-defined]
    pool_before = dict(llamacpp._POOL)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, iterations=1)
    base = compile_spec(spec)
    plan = plan_sweep(Sweep(base, matrix_for(base)[0], tmp_path / "cache"))
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
        for scenario in (*EXPECTED, NEVER, ALWAYS):  # a real outcome is never overruled by a scenario
            view = PlanCache(net.client.cache)
            assert plan_pipeline("w", net.pipeline, net.dataset, net.client.models, view, scenario=scenario).exact


def test_without_the_cache_every_repeat_is_a_new_call(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=2)
    plan_then_train(spec, tmp_path / "cache")
    with dlnflow.load(spec, cache_dir=tmp_path / "cache", cache_mode="refresh") as net:
        plan = plan_network(net)
        actual = net.train().as_dict()
    assert plan.cached_calls == 0 and plan.cache_hits == 0
    assert plan.new_calls == pytest.approx(actual["backend_calls"], rel=0.10)
