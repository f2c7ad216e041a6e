"""DLN-1 on the stand-in model: candidates, their scores by hand, the chosen prompt, reuse of samples."""

from __future__ import annotations

import math
import tempfile

import pytest
from standin import StandIn

from dlnflow.core.example import Example
from dlnflow.graph.layers import Graph, Layer
from dlnflow.graph.templates import Template
from dlnflow.optim.common import Shown, clean_proposal, pick_shown, rng_for
from dlnflow.optim.context import TrainContext
from dlnflow.optim.dln1 import DLN1
from dlnflow.runtime.cache import CallCache
from dlnflow.runtime.client import Client
from dlnflow.spec.settings import TrainSettings

LOGITS = {"A": (0.0, 0.0), "P1": (2.0, 0.0), "P2": (-1.0, 0.0), "P3": (0.1, 0.0), "P4": (0.2, 0.0)}


def gen(req):
    return f"New instruction: P{req.sample}"


def cls(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    head = prompt.split("\n", 1)[0]
    if "\n\nInput: " in prompt.split("\n\nInput: ", 1)[1] if "\n\nInput: " in prompt else False:
        return [0.5, 0.0]  # an example-carrying candidate
    return list(LOGITS[head])


def make(**train: object) -> tuple[TrainContext, StandIn]:
    model = StandIn(gen=gen, cls=cls)
    client = Client({"m": model}, CallCache(tempfile.mkdtemp()))
    layer = Layer("answer", ("x",), Template.from_spec("classify_forward"), "A", "m", classes=("Yes", "No"))
    base: dict[str, object] = {"method": "dln1", "batch_size": 2, "prompt_candidates": 3,
                               "example_candidates": 0, "memory": 0}
    base.update(train)
    settings = TrainSettings(**base)  # type: ignore[arg-type]
    pool = [Example("a", "Yes"), Example("b", "Yes")]
    return TrainContext(Graph([layer]), client, settings, "exact_match", pool, "m"), model


def logp_yes(logits: tuple[float, float]) -> float:
    return logits[0] - math.log(math.exp(logits[0]) + math.exp(logits[1]))


def test_candidates_scores_and_choice_by_hand() -> None:
    ctx, _ = make()
    record = DLN1(ctx).step(1)
    cands = record["layers"]["answer"]["candidates"]
    assert [c["prompt"] for c in cands] == ["A", "P1", "P2"]
    for c in cands:
        assert c["score"] == pytest.approx(logp_yes(LOGITS[c["prompt"]]), abs=1e-9)
    assert record["layers"]["answer"]["chosen"] == 1
    assert ctx.graph.output.prompt == "P1"
    # forward with "A" gives equal probabilities; argmax -> "Yes" which is the target
    assert record["batch_accuracy"] == 1.0


def test_current_prompt_kept_on_ties() -> None:
    ctx, _ = make()
    LOGITS_TIE = {"A": (1.0, 0.0), "P1": (1.0, 0.0), "P2": (1.0, 0.0)}
    ctx.client.models["m"].cls = lambda p, v: list(LOGITS_TIE[p.split("\n", 1)[0]])
    DLN1(ctx).step(1)
    assert ctx.graph.output.prompt == "A"


def test_example_candidate_carries_a_worked_example() -> None:
    ctx, _ = make(example_candidates=1)
    record = DLN1(ctx).step(1)
    prompts = [c["prompt"] for c in record["layers"]["answer"]["candidates"]]
    assert len(prompts) == 3
    assert any(p.startswith("A\n\nInput: ") and "\nAnswer: Yes" in p for p in prompts)


def test_raising_prompt_candidates_only_asks_for_new_rewrites() -> None:
    ctx, model = make(prompt_candidates=3)
    DLN1(ctx).step(1)
    first = sorted(r.sample for r in model.log if r.op == "generate")
    assert first == [1, 2]
    ctx2, _ = make(prompt_candidates=5)
    ctx2.client.models["m"] = model
    ctx2.client.cache = ctx.client.cache
    model.log.clear()
    DLN1(ctx2).step(1)
    assert sorted(r.sample for r in model.log if r.op == "generate") == [3, 4]


def test_rewrite_prompt_drops_examples_to_fit_the_context() -> None:
    ctx, model = make()
    model._n_ctx = 160  # the stand-in counts words as tokens
    long_pool = [Example("word " * 30, "Yes") for _ in range(2)]
    ctx.pool = long_pool
    DLN1(ctx).step(1)
    rewrites = [r for r in model.log if r.op == "generate"]
    assert rewrites
    for r in rewrites:
        assert model.count_tokens(r.prompt) <= 160 - ctx.train.rewrite_max_tokens


def test_clean_proposal() -> None:
    assert clean_proposal('New instruction: "Say yes."') == "Say yes."
    assert clean_proposal("   ") is None


def test_pick_shown_prefers_errors() -> None:
    shown = [Shown(str(i), "o", "t", correct=i % 2 == 0) for i in range(10)]
    chosen = pick_shown(shown, 4, rng_for(1, 2, 3))
    assert len(chosen) == 4
    assert sum(not s.correct for s in chosen) >= 2
    assert pick_shown(shown, 4, rng_for(1, 2, 3)) == chosen
