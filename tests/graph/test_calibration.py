"""Calibration of a classifier layer: hand-computed priors and decisions on a biased stand-in.

The stand-in rates "blue" higher for every input (its argmax is always blue), but less so for
fruits: animals get blue 0.9 / red 0.1, fruits blue 0.6 / red 0.4. The content-free inputs get
N/A 0.9/0.1, "" 0.7/0.3 and [MASK] 0.8/0.2 (mean 0.8/0.2). Animals are blue and fruits red, so
both calibrations decide every example right while the raw argmax gets half of them.
"""

from __future__ import annotations

import math

import pytest
from standin import StandIn

from dlnflow.graph import calibration as calib
from dlnflow.graph.layers import Graph, Layer
from dlnflow.graph.templates import Template
from dlnflow.runtime.client import Client

ANIMALS = ("cat", "dog")
FRUITS = ("apple", "pear")
CONTENT_FREE = {"N/A": [0.9, 0.1], "": [0.7, 0.3], "[MASK]": [0.8, 0.2]}


def the_input(prompt: str) -> str:
    return prompt.rsplit("Input: ", 1)[1].split("\n", 1)[0]


def biased(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    word = the_input(prompt)
    probs = CONTENT_FREE.get(word) or ([0.9, 0.1] if word in ANIMALS else [0.6, 0.4])
    return [math.log(p) for p in probs]


def make(method: str) -> tuple[Graph, Client, StandIn]:
    layer = Layer("answer", ("x",), Template.from_spec("classify_forward"), "Pick a colour.", "m",
                  classes=("blue", "red"), calibration=method)
    backend = StandIn(cls=biased)
    return Graph([layer]), Client({"m": backend}), backend


XS = [*ANIMALS, *FRUITS]
RIGHT = ["blue", "blue", "red", "red"]


def test_without_calibration_the_biased_model_always_answers_blue() -> None:
    graph, client, _ = make("none")
    result = graph.forward(client, XS)
    assert result.outputs() == ["blue"] * 4
    assert result.prior is None


def test_batch_calibration_divides_by_the_batch_mean() -> None:
    graph, client, backend = make("batch")
    result = graph.forward(client, XS)
    assert result.prior == pytest.approx([0.75, 0.25])  # (0.9 + 0.9 + 0.6 + 0.6) / 4
    assert result.outputs() == RIGHT
    # animal: (0.9/0.75, 0.1/0.25) = (1.2, 0.4) -> (0.75, 0.25); fruit: (0.8, 1.6) -> (1/3, 2/3)
    assert calib.calibrate(result.probs[0], result.prior) == pytest.approx([0.75, 0.25])
    assert calib.calibrate(result.probs[2], result.prior) == pytest.approx([1 / 3, 2 / 3])
    assert backend.calls["classify"] == 4  # no extra calls
    assert result.probs[2] == pytest.approx([0.6, 0.4])  # the raw probabilities are kept


def test_content_free_calibration_divides_by_the_content_free_mean() -> None:
    graph, client, backend = make("content_free")
    result = graph.forward(client, XS)
    assert result.prior == pytest.approx([0.8, 0.2])
    assert result.outputs() == RIGHT
    # animal: (0.9/0.8, 0.1/0.2) = (1.125, 0.5) -> (9/13, 4/13); fruit: (0.75, 2.0) -> (3/11, 8/11)
    assert calib.calibrate(result.probs[1], result.prior) == pytest.approx([9 / 13, 4 / 13])
    assert calib.calibrate(result.probs[3], result.prior) == pytest.approx([3 / 11, 8 / 11])
    free = [r.prompt for r in backend.log if the_input(r.prompt) in CONTENT_FREE]
    assert free == ["Pick a colour.\n\nInput: N/A\nAnswer:", "Pick a colour.\n\nInput: \nAnswer:",
                    "Pick a colour.\n\nInput: [MASK]\nAnswer:"]


def test_a_single_input_uses_the_fixed_prior_or_stays_uncalibrated() -> None:
    graph, client, _ = make("batch")
    assert graph(client, "apple") == "blue"  # a mean over one example says nothing: raw argmax
    assert graph.forward(client, ["apple"]).prior is None
    graph.output.prior = (0.75, 0.25)
    assert graph(client, "apple") == "red"
    assert graph(client, "cat") == "blue"
    assert graph.forward(client, ["apple", "pear"]).prior == [0.75, 0.25]  # fixed prior wins over the mean


def test_fixed_priors_load_only_when_they_fit_the_layer() -> None:
    graph, _, _ = make("batch")
    good = {"answer": {"method": "batch", "prior": [0.7, 0.3]}}
    assert calib.load_fixed_priors(graph, good) == ["answer"] and graph.output.prior == (0.7, 0.3)
    for bad in ({"method": "content_free", "prior": [0.7, 0.3]}, {"method": "batch", "prior": [1.0]},
                {"method": "batch", "prior": ["x", 1]}, "batch"):
        assert calib.load_fixed_priors(graph, {"answer": bad}) == []
        assert graph.output.prior is None


def test_calibrate_rejects_a_prior_of_another_length() -> None:
    with pytest.raises(ValueError, match="2 classes cannot calibrate 3"):
        calib.calibrate([0.2, 0.3, 0.5], [0.5, 0.5])
