"""Candidate scoring with a calibrated classifier: calibrated log-probabilities of the correct class,
the prior of the candidate itself, and a DLN-1 choice that calibration changes (all by hand)."""

from __future__ import annotations

import math
import tempfile

import pytest
from standin import StandIn

from dlnflow.core.example import Example
from dlnflow.graph.layers import Graph, Layer
from dlnflow.graph.templates import Template
from dlnflow.optim.common import loglik
from dlnflow.optim.context import TrainContext
from dlnflow.optim.dln1 import DLN1
from dlnflow.runtime.cache import CallCache
from dlnflow.runtime.client import Client
from dlnflow.spec.settings import TrainSettings

# class probabilities (blue, red) by prompt and input; "" and the like are the content-free inputs
PROBS = {
    "A": {"cat": [0.9, 0.1], "apple": [0.6, 0.4], "free": [0.8, 0.2]},
    "P1": {"cat": [0.99, 0.01], "apple": [0.9, 0.1], "free": [0.6, 0.4]},
}


def cls(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    head = prompt.split("\n", 1)[0]
    word = prompt.rsplit("Input: ", 1)[1].split("\n", 1)[0]
    table = PROBS[head]
    return [math.log(p) for p in table.get(word, table["free"])]


def make(method: str) -> tuple[Layer, Client]:
    layer = Layer("answer", ("x",), Template.from_spec("classify_forward"), "A", "m", classes=("blue", "red"),
                  calibration=method)
    model = StandIn(gen=lambda req: f"New instruction: P{req.sample}", cls=cls)
    return layer, Client({"m": model}, CallCache(tempfile.mkdtemp()))


VALUES = [{"x": "cat"}, {"x": "apple"}]
TARGETS = ["blue", "red"]


def test_batch_scoring_uses_the_calibrated_probability_of_the_correct_class() -> None:
    layer, client = make("batch")
    layer.prior = (0.5, 0.5)  # a fixed prior belongs to the locked prompt, never to a candidate
    # prior of A over the batch: (0.75, 0.25); cat -> 0.75 blue, apple -> (0.8, 1.6) -> 2/3 red
    assert loglik(client, layer, VALUES, TARGETS, "A") == pytest.approx([math.log(0.75), math.log(2 / 3)])
    # prior of P1: (0.945, 0.055); cat -> (1.0476, 0.1818), apple -> (0.9524, 1.8182)
    cat, apple = (0.99 / 0.945) / (0.99 / 0.945 + 0.01 / 0.055), (0.1 / 0.055) / (0.9 / 0.945 + 0.1 / 0.055)
    assert loglik(client, layer, VALUES, TARGETS, "P1") == pytest.approx([math.log(cat), math.log(apple)])


def test_content_free_scoring_uses_the_candidates_own_content_free_prior() -> None:
    layer, client = make("content_free")
    # A: prior (0.8, 0.2); cat -> 9/13 blue; apple -> (0.75, 2.0) -> 8/11 red
    assert loglik(client, layer, VALUES, TARGETS, "A") == pytest.approx([math.log(9 / 13), math.log(8 / 11)])
    # P1: prior (0.6, 0.4); cat -> (1.65, 0.025) -> 66/67 blue; apple -> (1.5, 0.25) -> 1/7 red
    assert loglik(client, layer, VALUES, TARGETS, "P1") == pytest.approx([math.log(66 / 67), math.log(1 / 7)])


def test_uncalibrated_scoring_is_the_raw_log_probability() -> None:
    layer, client = make("none")
    assert loglik(client, layer, VALUES, TARGETS, "P1") == pytest.approx([math.log(0.99), math.log(0.1)])


def choose(method: str) -> dict[str, object]:
    layer, client = make(method)
    settings = TrainSettings(method="dln1", batch_size=2, prompt_candidates=2, example_candidates=0, memory=0)
    pool = [Example("cat", "blue"), Example("apple", "red")]
    record = DLN1(TrainContext(Graph([layer]), client, settings, "exact_match", pool, "m")).step(1)
    return record["layers"]["answer"]  # type: ignore[no-any-return]


def test_calibration_changes_which_candidate_dln1_keeps() -> None:
    raw, calibrated = choose("none"), choose("batch")
    # raw: A = (log .9 + log .4) / 2 = -0.511 beats P1 = (log .99 + log .1) / 2 = -1.156
    assert [c["prompt"] for c in raw["candidates"]] == ["A", "P1"]  # type: ignore[index]
    assert raw["candidates"][0]["score"] == pytest.approx((math.log(0.9) + math.log(0.4)) / 2)  # type: ignore[index]
    assert raw["chosen"] == 0
    # calibrated: A = (log .75 + log 2/3) / 2 = -0.346 loses to P1 = -0.291
    assert calibrated["candidates"][0]["score"] == pytest.approx(  # type: ignore[index]
        (math.log(0.75) + math.log(2 / 3)) / 2)
    assert calibrated["chosen"] == 1
