"""Evaluation of a calibrated classifier decides with the prior of the whole split, not of each chunk."""

from __future__ import annotations

import math

import pytest
from standin import StandIn

from dlnflow.core.example import Example
from dlnflow.graph.layers import Graph, Layer
from dlnflow.graph.templates import Template
from dlnflow.runtime.client import Client
from dlnflow.training.evaluate import evaluate


def biased(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    word = prompt.rsplit("Input: ", 1)[1].split("\n", 1)[0]
    return [math.log(0.9), math.log(0.1)] if word in ("cat", "dog") else [math.log(0.6), math.log(0.4)]


EXAMPLES = [Example("cat", "blue"), Example("dog", "blue"), Example("apple", "red"), Example("pear", "red")]


def run(method: str, chunk: int) -> tuple[float, list[str], list[float] | None]:
    layer = Layer("answer", ("x",), Template.from_spec("classify_forward"), "Pick.", "m", classes=("blue", "red"),
                  calibration=method)
    result = evaluate(Graph([layer]), Client({"m": StandIn(cls=biased)}), EXAMPLES, "exact_match", chunk=chunk)
    return result.accuracy, result.predictions, result.prior


def test_the_split_mean_decides_even_when_each_chunk_holds_one_kind_of_input() -> None:
    # chunk means would be (0.9, 0.1) and (0.6, 0.4): every example a tie, decided "blue"
    accuracy, predictions, prior = run("batch", chunk=2)
    assert prior == pytest.approx([0.75, 0.25])
    assert predictions == ["blue", "blue", "red", "red"] and accuracy == 1.0
    assert run("batch", chunk=16)[1] == predictions


def test_uncalibrated_and_content_free_evaluation() -> None:
    assert run("none", chunk=2) == (0.5, ["blue"] * 4, None)
    accuracy, predictions, prior = run("content_free", chunk=2)  # every input "content-free" looks fruit-like
    assert prior == pytest.approx([0.6, 0.4]) and predictions == ["blue", "blue", "blue", "blue"]
    assert accuracy == 0.5
