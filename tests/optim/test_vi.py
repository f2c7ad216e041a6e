"""Variational inference (DLN-2 and chains) on the stand-in model, against hand-computed values."""

from __future__ import annotations

import math
import tempfile

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
    record = VariationalChain(ctx).step(1)
    assert set(record["layers"]) == {"think", "think1", "answer"}
    # the lower level's posterior requests are conditioned on the best text of the level above
    lower = [r for r in model.log if r.temperature > 0 and "Reasoning:" in r.prompt[-12:] and "Think1" not in r.prompt]
    assert lower


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
