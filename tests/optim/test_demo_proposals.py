"""Learning demonstrations on the stand-in model: the first draw, swaps, and joint candidates scored by hand."""

from __future__ import annotations

import math
import tempfile

import pytest
from standin import StandIn

from dlnflow.core.example import Example
from dlnflow.graph.demos import Demo, example_id
from dlnflow.graph.layers import Graph, Layer
from dlnflow.graph.templates import Template
from dlnflow.optim.common import rng_for, sample_batch
from dlnflow.optim.context import TrainContext
from dlnflow.optim.demos import first_draw, swap_demos, to_demo
from dlnflow.optim.dln1 import DLN1
from dlnflow.optim.vi import VariationalChain
from dlnflow.runtime.cache import CallCache
from dlnflow.runtime.client import Client
from dlnflow.spec.settings import TrainSettings

ANIMALS = ["cat", "dog", "owl", "cow", "eel", "ant"]
FRUITS = ["fig", "kiwi", "lime", "pear"]
POOL = [Example(w, "blue") for w in ANIMALS] + [Example(w, "red") for w in FRUITS]


def red_shown(prompt: str) -> int:
    """How many demonstrations in a rendered context answer red (the stand-in's only rule)."""
    return prompt.count("\nAnswer: red\n")


def cls(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    return [0.0, 0.5 * red_shown(prompt)]


def gen(req):  # type: ignore[no-untyped-def]
    if req.temperature == 0:
        return "h"
    return f"New instruction: P{req.sample}"


def make(method: str = "dln1", k: int = 2, **train: object) -> tuple[TrainContext, StandIn]:
    model = StandIn(gen=gen, cls=cls)
    client = Client({"m": model}, CallCache(tempfile.mkdtemp()))
    out = Layer("answer", ("x",), Template.from_spec("classify_forward"), "A", "m", classes=("blue", "red"),
                demo_k=k)
    layers = [out]
    if method == "vi":
        think = Layer("think", ("x",), Template.from_spec("hidden_forward"), "T", "m")
        out.inputs = ("x", "think")
        layers = [think, out]
    out.demos = (to_demo(POOL[0]), to_demo(POOL[1]))  # two blue demonstrations to start with
    base: dict[str, object] = {"method": method, "batch_size": 4, "prompt_candidates": 4,
                               "example_candidates": 2, "memory": 0, "seed": 5, "hidden_samples": 1}
    base.update(train)
    return TrainContext(Graph(layers), client, TrainSettings(**base), "exact_match", list(POOL), "m"), model


def test_first_draw_is_balanced_and_seeded() -> None:
    # mutation tried: taking the first k of one shuffled list (no turns over targets) failed the balance
    for seed in range(6):
        demos = first_draw(POOL, 4, seed)
        assert sorted(d.target for d in demos) == ["blue", "blue", "red", "red"]
        assert len({d.id for d in demos}) == 4
        assert demos == first_draw(POOL, 4, seed)
        assert all(d.id == example_id(d.input, d.target) for d in demos)
    assert len({first_draw(POOL, 4, s) for s in range(6)}) > 1
    assert len(first_draw(POOL[:3], 5, 0)) == 3  # a small pool gives what it has


def test_swaps_replace_one_to_k_with_same_class_examples_outside_the_batch() -> None:
    # mutation tried: not excluding the batch let "dog" (in the batch) replace a demonstration
    current = (to_demo(POOL[0]), to_demo(POOL[6]))  # cat/blue, fig/red
    batch = {example_id("dog", "blue"), example_id("kiwi", "red")}
    seen = set()
    for j in range(40):
        out = swap_demos(current, POOL, batch, rng_for(1, 1, 1, 2000 + j))
        assert out == swap_demos(current, POOL, batch, rng_for(1, 1, 1, 2000 + j))  # deterministic
        changed = [i for i in range(2) if out[i] != current[i]]
        assert 1 <= len(changed) <= 2
        assert [d.target for d in out] == ["blue", "red"]
        assert not {d.id for d in out} & batch
        assert len({d.id for d in out}) == 2
        seen.add(len(changed))
    assert seen == {1, 2}
    # without a same-class example left, any free example is taken
    assert swap_demos((to_demo(POOL[6]),), POOL[:7], set(), rng_for(0))[0].target == "blue"


def log_p(target: str, reds: int) -> float:
    logits = {"blue": 0.0, "red": 0.5 * reds}
    return logits[target] - math.log(math.exp(0.0) + math.exp(0.5 * reds))


def test_dln1_scores_swaps_like_rewrites_and_keeps_the_best_pair() -> None:
    # mutation tried: scoring every candidate with the current demonstrations gave the swaps the
    # current score and kept the two blue demonstrations
    ctx, _ = make()
    batch = sample_batch(ctx.pool, 4, 5, 1)
    record = DLN1(ctx).step(1)["layers"]["answer"]
    cands = record["candidates"]
    current = [POOL[0], POOL[1]]
    assert cands[0] == {"prompt": "A", "score": pytest.approx(sum(log_p(e.target, 0) for e in batch) / 4),
                        "demos": [example_id(e.input, e.target) for e in current]}
    rewrites = [c for c in cands if c["prompt"] != "A"]
    swaps = [c for c in cands[1:] if c["prompt"] == "A"]
    assert [c["prompt"] for c in rewrites] == ["P1"]  # prompt_candidates 4 = current + 1 rewrite + 2 swaps
    assert rewrites[0]["demos"] == cands[0]["demos"]  # a rewrite keeps the current demonstrations
    assert len(swaps) == 2
    by_id = {example_id(e.input, e.target): e for e in POOL}
    for c in cands:  # each pair scored exactly like an instruction: mean log p(target) on the batch
        reds = sum(by_id[i].target == "red" for i in c["demos"])
        assert c["score"] == pytest.approx(sum(log_p(e.target, reds) for e in batch) / 4, abs=1e-9)
    best = record["chosen"]
    assert best == max(range(len(cands)), key=lambda i: (cands[i]["score"], -i))
    layer = ctx.graph.output
    assert [d.id for d in layer.demos] == cands[best]["demos"]
    assert layer.prompt == cands[best]["prompt"]


def test_dln1_demonstration_proposals_are_deterministic() -> None:
    a, _ = make()
    b, _ = make()
    assert DLN1(a).step(2) == DLN1(b).step(2)
    assert a.graph.output.demos == b.graph.output.demos


def test_vi_proposes_and_applies_demonstration_swaps_on_the_output_layer() -> None:
    # mutation tried: VI scoring every candidate with the current demonstrations gave all swaps the
    # current score (and kept the current pair)
    ctx, _ = make("vi", prompt_candidates=4, example_candidates=2, seed=2)
    batch = sample_batch(ctx.pool, 4, 2, 1)
    record = VariationalChain(ctx).step(1)["layers"]["answer"]
    cands = record["candidates"]
    by_id = {example_id(e.input, e.target): e for e in POOL}
    shown = [[by_id[i].input for i in c["demos"]] for c in cands]
    assert [c["prompt"] for c in cands] == ["A", "P1", "A", "A"]
    assert shown[:2] == [["cat", "dog"], ["cat", "dog"]]  # the rewrite keeps the current demonstrations
    assert [by_id[i].target for i in cands[2]["demos"]] == ["blue", "blue"]  # same-class swap
    assert shown[3] == ["eel", "fig"]  # any-class swap
    for c in cands:  # one hidden sample per example, so each weight is 1: the plain mean log-likelihood
        reds = sum(by_id[i].target == "red" for i in c["demos"])
        assert c["score"] == pytest.approx(sum(log_p(e.target, reds) for e in batch) / 4, abs=1e-9)
    assert record["chosen"] == 3
    assert [d.input for d in ctx.graph.output.demos] == ["eel", "fig"]


def test_layers_without_demonstrations_keep_their_candidates() -> None:
    ctx, _ = make(k=0)
    ctx.graph.output.demos = ()
    cands = DLN1(ctx).step(1)["layers"]["answer"]["candidates"]
    assert all("demos" not in c for c in cands)
    assert ctx.graph.output.demos == ()


def test_a_demo_object_round_trips() -> None:
    d = Demo.of("cat", "blue")
    assert Demo(**d.as_dict()) == d
