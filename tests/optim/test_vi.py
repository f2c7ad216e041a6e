"""Variational inference (DLN-2 and chains) on the stand-in model, against hand-computed values."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from standin import StandIn

from dlnflow.core.errors import ConfigError
from dlnflow.core.example import Example
from dlnflow.graph.layers import Graph, Layer
from dlnflow.graph.templates import Template
from dlnflow.optim.context import TrainContext
from dlnflow.optim.vi import VariationalChain, check_chain, softmax_rows, trust_penalty
from dlnflow.runtime.cache import CallCache
from dlnflow.runtime.client import Client
from dlnflow.spec.settings import TrainSettings

# The stand-in's rules. Hidden texts are "h0" (forward) or "hK" (posterior sample K).
# Output class log-probs depend on which hidden text the output layer sees and on its prompt.
CLASS_LOGITS = {"h0": (0.0, 0.0), "h1": (2.0, 0.0), "h2": (0.0, 1.0), "h3": (0.5, 0.0), "h4": (0.0, 0.5)}


def gen(req):
    if req.temperature == 0:
        return "h0"
    if "New instruction:" in req.prompt:
        return f"P{req.sample}"
    return f"h{req.sample}"


def cls(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    for h, logits in CLASS_LOGITS.items():
        if f": {h}\nAnswer:" in prompt:
            bonus = 1.0 if prompt.startswith("P1") else 0.0
            return [logits[0] + bonus, logits[1]]
    raise AssertionError(prompt)


def score(prompt: str, target: str) -> list[float]:
    base = {"h0": -1.0, "h1": -2.0, "h2": -0.5}.get(target.strip(), -3.0)
    if prompt.startswith("P2"):
        base += 0.25 if target.strip() == "h1" else 0.0
    return [base, base]


def make(n_layers: int = 2, **train: object) -> tuple[TrainContext, StandIn]:
    model = StandIn(gen=gen, score=score, cls=cls)
    client = Client({"m": model}, CallCache(tempfile.mkdtemp()))
    layers = [Layer("think", ("x",), Template.from_spec("hidden_forward"), "T", "m")]
    for j in range(1, n_layers - 1):
        layers.append(Layer(f"think{j}", ("x", layers[-1].name), Template.from_spec("hidden_forward"), "T", "m"))
    layers.append(Layer("answer", ("x", layers[-1].name), Template.from_spec("classify_forward"), "A", "m",
                        classes=("Yes", "No")))
    base: dict[str, object] = {"method": "vi", "batch_size": 1, "prompt_candidates": 3, "hidden_samples": 2,
                               "example_candidates": 0, "memory": 0}
    base.update(train)
    settings = TrainSettings(**base)  # type: ignore[arg-type]
    pool = [Example("q", "Yes")]
    return TrainContext(Graph(layers), client, settings, "exact_match", pool, "m"), model


def log_norm(logits: tuple[float, float], i: int) -> float:
    return logits[i] - math.log(math.exp(logits[0]) + math.exp(logits[1]))


def test_posterior_weights_match_hand_computation() -> None:
    ctx, _ = make()
    step = VariationalChain(ctx).step(1)
    post = step["layers"]["think"]["posterior"][0]
    assert post["texts"] == ["h0", "h1", "h2"]
    # log w = log p(Yes | h) + mean log p(h | x, p1), temperature 1
    logw = np.array([log_norm(CLASS_LOGITS[h], 0) + s for h, s in (("h0", -1.0), ("h1", -2.0), ("h2", -0.5))])
    w = np.exp(logw - logw.max())
    w /= w.sum()
    assert post["weights"] == pytest.approx(list(w), abs=1e-6)


def test_output_candidates_scored_by_weighted_likelihood() -> None:
    ctx, _ = make()
    # weights computed before any prompt changes
    logw = np.array([log_norm(CLASS_LOGITS[h], 0) + s for h, s in (("h0", -1.0), ("h1", -2.0), ("h2", -0.5))])
    w = np.exp(logw - logw.max())
    w /= w.sum()
    step = VariationalChain(ctx).step(1)
    cands = step["layers"]["answer"]["candidates"]
    assert [c["prompt"] for c in cands] == ["A", "P1", "P2"]
    expect = {}
    for prompt in ("A", "P1", "P2"):
        bonus = 1.0 if prompt == "P1" else 0.0
        expect[prompt] = sum(
            wk * log_norm((CLASS_LOGITS[h][0] + bonus, CLASS_LOGITS[h][1]), 0)
            for wk, h in zip(w, ("h0", "h1", "h2"), strict=True)
        )
    for c in cands:
        assert c["score"] == pytest.approx(expect[c["prompt"]], abs=1e-9)
    assert ctx.graph.layer("answer").prompt == "P1"  # the bonus prompt wins


def test_hidden_candidates_scored_by_weighted_prior() -> None:
    ctx, _ = make()
    logw = np.array([log_norm(CLASS_LOGITS[h], 0) + s for h, s in (("h0", -1.0), ("h1", -2.0), ("h2", -0.5))])
    w = np.exp(logw - logw.max())
    w /= w.sum()
    step = VariationalChain(ctx).step(1)
    cands = {c["prompt"]: c["score"] for c in step["layers"]["think"]["candidates"]}
    base = {"h0": -1.0, "h1": -2.0, "h2": -0.5}
    for prompt, got in cands.items():
        bump = {"h1": 0.25} if prompt == "P2" else {}
        want = sum(wk * (base[h] + bump.get(h, 0.0)) for wk, h in zip(w, ("h0", "h1", "h2"), strict=True))
        assert got == pytest.approx(want, abs=1e-9)
    # P2 raises log p(h1) and h1 has weight, so it beats the current prompt
    assert ctx.graph.layer("think").prompt == "P2"


def test_depth_two_chain_equals_reference_dln2() -> None:
    """An independent, direct DLN-2 computation gives the same choices and objectives."""
    ctx, _ = make()
    record = VariationalChain(ctx).step(1)
    ctx2, _ = make()
    ref = reference_dln2(ctx2)
    for name in ("think", "answer"):
        got = record["layers"][name]
        assert got["candidates"][got["chosen"]]["prompt"] == ref[name][0]
        assert got["objective"] == pytest.approx(ref[name][1], abs=1e-9)


def reference_dln2(ctx: TrainContext) -> dict[str, tuple[str, float]]:
    """DLN-2 written out for one example, straight from the formulas."""
    c = ctx.client
    p1, p2 = ctx.graph.layers
    x = ctx.pool[0].input
    h = c.run("m", [p1.generate_request(p1.render({"x": x}))])[0]["text"]
    texts = [h, "h1", "h2"]

    def log_py(prompt: str, hid: str) -> float:
        a = c.run("m", [p2.classify_request(p2.render({"x": x, "think": hid}, prompt))])[0]
        return math.log(a["probs"][0])

    def log_ph(prompt: str, hid: str) -> float:
        a = c.run("m", [p1.score_request(p1.render({"x": x}, prompt), hid)])[0]
        return float(np.mean(a["logprobs"]))

    logw = np.array([log_py("A", t) + log_ph("T", t) for t in texts])
    w = softmax_rows([logw])[0]
    pairs = list(zip(w, texts, strict=True))
    out = max((sum(wk * log_py(p, t) for wk, t in pairs), -i, p) for i, p in enumerate(["A", "P1", "P2"]))
    hid = max((sum(wk * log_ph(p, t) for wk, t in pairs), -i, p) for i, p in enumerate(["T", "P1", "P2"]))
    return {"answer": (out[2], out[0]), "think": (hid[2], hid[0])}


def test_raising_hidden_samples_only_draws_new_samples() -> None:
    ctx, model = make()
    VariationalChain(ctx).step(1)
    posterior_calls = [r for r in model.log if r.temperature > 0 and "Reasoning:" in r.prompt[-12:]]
    assert sorted(r.sample for r in posterior_calls) == [1, 2]
    ctx2, _ = make(hidden_samples=4)
    ctx2.client.models["m"] = model
    ctx2.client.cache = ctx.client.cache
    model.log.clear()
    VariationalChain(ctx2).step(1)
    new = [r for r in model.log if r.temperature > 0 and "Reasoning:" in r.prompt[-12:]]
    assert sorted(r.sample for r in new) == [3, 4]


def test_resample_wrong_only_skips_correct_examples() -> None:
    ctx, model = make(resample_wrong_only=True)
    # forward h0 gives equal logits; argmax picks "Yes" (index 0), which is correct
    VariationalChain(ctx).step(1)
    assert not [r for r in model.log if r.temperature > 0 and "Reasoning:" in r.prompt[-12:]]


def test_posterior_temperature_flattens_weights() -> None:
    ctx, _ = make(posterior_temperature=100.0)
    w = VariationalChain(ctx).step(1)["layers"]["think"]["posterior"][0]["weights"]
    assert max(w) - min(w) < 0.02


def test_trust_penalty() -> None:
    assert trust_penalty("abc", "abc", 1.0) == 0.0
    assert trust_penalty("abc", "xyz", 2.0) == pytest.approx(2.0)
    assert trust_penalty("abc", "xyz", 0.0) == 0.0


def test_deeper_chain_runs_top_down() -> None:
    ctx, model = make(n_layers=3)
    # the middle layer's prior now favours h2, so its best posterior text differs from its forward text
    model.score_fn = lambda prompt, target: [{"h2": -0.1}.get(target.strip(), -3.0)] * 2
    record = VariationalChain(ctx).step(1)
    assert set(record["layers"]) == {"think", "think1", "answer"}
    middle = record["layers"]["think1"]["posterior"][0]
    best = middle["texts"][int(np.argmax(middle["weights"]))]
    assert best == "h2" != middle["texts"][0]
    posterior = [r.prompt for r in model.log if r.temperature > 0 and "The correct final answer is:" in r.prompt]
    top = [p for p in posterior if "The final step will be told: A\n" in p]  # think1, below the output layer
    lower = [p for p in posterior if "The final step will be told: T\n" in p]  # think, below think1
    assert len(top) == len(lower) == 2  # hidden_samples requests per level
    assert all("The correct final answer is: Yes\n" in p for p in top)
    # the lower level's posterior requests are conditioned on the best text of the level above
    assert all(f"The correct final answer is: {best}\n" in p for p in lower)


def test_trust_penalty_keeps_the_current_prompt_against_a_far_candidate() -> None:
    free = VariationalChain(make()[0])
    free_step = free.step(1)["layers"]["answer"]
    scores = {c["prompt"]: c["score"] for c in free_step["candidates"]}
    assert free.ctx.graph.layer("answer").prompt == "P1"  # without a penalty the unrelated P1 wins
    gain = scores["P1"] - scores["A"]
    assert gain > 0 and trust_penalty("A", "P1", 1.0) == 1.0
    strength = 2 * gain
    held = VariationalChain(make(trust_penalty=strength)[0])
    held_step = held.step(1)["layers"]["answer"]
    penalised = {c["prompt"]: c["score"] for c in held_step["candidates"]}
    assert held.ctx.graph.layer("answer").prompt == "A"
    assert penalised["A"] == pytest.approx(scores["A"], abs=1e-12)  # staying costs nothing
    assert penalised["P1"] == pytest.approx(scores["P1"] - strength, abs=1e-12)


def test_remembered_prompts_reenter_both_layers_candidates() -> None:
    ctx, _ = make(prompt_candidates=1, memory=2)
    ctx.memory.add("answer", 0.5, "P1")
    ctx.memory.add("think", 0.5, "P2")
    record = VariationalChain(ctx).step(1)
    assert [c["prompt"] for c in record["layers"]["answer"]["candidates"]] == ["A", "P1"]
    assert [c["prompt"] for c in record["layers"]["think"]["candidates"]] == ["T", "P2"]
    # both remembered prompts score better than the current ones under the stand-in's rules
    assert ctx.graph.layer("answer").prompt == "P1" and ctx.graph.layer("think").prompt == "P2"


def test_vi_needs_a_chain() -> None:
    ctx, _ = make()
    ctx.graph.layers[1].inputs = ("x",)
    with pytest.raises(ConfigError, match="chain"):
        check_chain(ctx.graph)
    single = Graph([ctx.graph.layers[1]])
    with pytest.raises(ConfigError, match="at least two"):
        check_chain(single)


def test_vi_refuses_a_backend_without_score() -> None:
    ctx, model = make()
    model.capabilities = frozenset({"generate", "classify"})
    with pytest.raises(ConfigError, match="cannot 'score'"):
        VariationalChain(ctx)


# -- VI trained on the real embedded model ---------------------------------------------------------
SMALL_VI = {
    "  split: {train: 16, dev: 8, test: 8, seed: 1}": "  split: {train: 4, dev: 2, test: 2, seed: 1}",
    "  batch_size: 4": "  batch_size: 2",
    "  prompt_candidates: 3": "  prompt_candidates: 3\n  example_candidates: 0\n  rewrite_max_tokens: 40",
    "  validate_every: 1": "  validate_every: 1\n  posterior_temperature: 1.0",
    "local: {backend: llamacpp}": "local: {backend: llamacpp, n_threads: 1}",
}


@pytest.mark.real
def test_vi_trains_two_layers_on_the_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One VI iteration of a two-layer chain: posterior texts drawn and weighted, both layers' candidates
    scored, both learned prompts in the lock, and a warm rerun that calls nothing."""
    import yaml
    from helpers import TWO_LAYERS, write_spec

    import dlnflow
    from dlnflow.training.runs import read_log

    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, method="vi", iterations=1, layers=TWO_LAYERS)
    text = spec.read_text()
    for old, new in SMALL_VI.items():
        assert old in text
        text = text.replace(old, new)
    spec.write_text(text)
    with dlnflow.load(spec, cache_dir=tmp_path / "cache") as net:
        result = net.train().as_dict()
    assert result["backend_calls"] > 0 and result["iterations_run"] == 1
    step = next(r for r in read_log(Path(result["run_dir"])) if r.get("event") == "step")
    posterior = step["layers"]["think"]["posterior"]
    assert len(posterior) == 2  # one row per example of the batch
    for row in posterior:
        assert len(row["weights"]) == len(row["texts"]) and sum(row["weights"]) == pytest.approx(1.0, abs=1e-5)
    drawn = [t for row in posterior for t in row["texts"][1:]]  # texts[0] is the forward text
    assert drawn, "the backward model wrote no posterior text different from the forward one"
    assert any(max(row["weights"]) < 1.0 for row in posterior if len(row["texts"]) > 1)
    for name in ("think", "answer"):
        layer = step["layers"][name]
        assert layer["candidates"] and all(c["score"] < 0 for c in layer["candidates"])  # weighted log-probs
        assert layer["objective"] == layer["candidates"][layer["chosen"]]["score"]
    told_apart = [len({c["score"] for c in step["layers"][n]["candidates"]}) for n in ("think", "answer")]
    assert max(told_apart) > 1, "no rewritten candidate was scored against the current prompt"
    lock = yaml.safe_load((tmp_path / "tiny.lock.yaml").read_text())
    assert {name: lock["layers"][name]["prompt"] for name in ("think", "answer")} == {
        "think": result["prompts"]["think.prompt"], "answer": result["prompts"]["answer.prompt"]}
    lock_bytes = (tmp_path / "tiny.lock.yaml").read_bytes()
    with dlnflow.load(spec, cache_dir=tmp_path / "cache") as net:
        again = net.train().as_dict()
    assert again["backend_calls"] == 0 and again["prompts"] == result["prompts"]
    assert (tmp_path / "tiny.lock.yaml").read_bytes() == lock_bytes


@pytest.mark.real
def test_vi_trains_a_three_layer_chain_on_the_real_model(project: Path) -> None:
    """One VI iteration of think -> colour -> answer: posterior texts drawn and weighted at both hidden
    levels, all three layers' candidates scored, all three learned prompts locked, a warm rerun free."""
    import yaml
    from real_specs import chain3

    import dlnflow
    from dlnflow.training.runs import read_log

    spec = chain3(project / "pipelines")
    lock_path = spec.with_name("quickstart-chain3.lock.yaml")
    with dlnflow.load(spec) as net:  # runs and cache: the project copy's (see the project fixture)
        result = net.train().as_dict()
    assert result["backend_calls"] > 0 and result["iterations_run"] == 1
    step = next(r for r in read_log(Path(result["run_dir"])) if r.get("event") == "step")
    assert set(step["layers"]) == {"think", "colour", "answer"}
    for name in ("think", "colour"):  # the upper hidden level first conditions on y, the lower on its best
        posterior = step["layers"][name]["posterior"]
        assert len(posterior) == 3, name  # one row per example of the batch
        for row in posterior:
            assert len(row["weights"]) == len(row["texts"]) and sum(row["weights"]) == pytest.approx(1.0, abs=1e-5)
        assert any(len(row["texts"]) > 1 for row in posterior), f"no posterior text drawn for {name}"
        assert any(0.0 < max(row["weights"]) < 1.0 for row in posterior if len(row["texts"]) > 1), name
    for name in ("think", "colour", "answer"):
        layer = step["layers"][name]
        assert layer["candidates"] and all(c["score"] < 0 for c in layer["candidates"]), name
        assert layer["objective"] == layer["candidates"][layer["chosen"]]["score"], name
    lock = yaml.safe_load(lock_path.read_text())
    assert {n: lock["layers"][n]["prompt"] for n in ("think", "colour", "answer")} == {
        n: result["prompts"][f"{n}.prompt"] for n in ("think", "colour", "answer")}
    lock_bytes = lock_path.read_bytes()
    with dlnflow.load(spec) as net:
        again = net.train().as_dict()
    assert again["backend_calls"] == 0 and again["prompts"] == result["prompts"]
    assert lock_path.read_bytes() == lock_bytes
