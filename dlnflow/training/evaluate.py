"""Accuracy of a graph on a list of examples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dlnflow.core.example import Example
from dlnflow.graph import calibration as calib
from dlnflow.graph.layers import Graph
from dlnflow.graph.losses import get_loss
from dlnflow.runtime.client import Client


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    predictions: list[str]
    correct: list[bool]
    prior: list[float] | None = None  # the output layer's calibration prior over this split

    @property
    def n(self) -> int:
        return len(self.predictions)


def evaluate(
    graph: Graph,
    client: Client,
    examples: Sequence[Example],
    loss: str,
    chunk: int = 16,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Run the graph greedily over ``examples`` in chunks; accuracy under ``loss``.

    A calibrated classifier output decides with the prior of the whole split
    (:func:`dlnflow.graph.calibration.split_prior`), not of each chunk.
    """
    if not examples:
        return Evaluation(0.0, [], [])
    check = get_loss(loss)
    preds: list[str] = []
    rows: list[list[float]] = []
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        result = graph.forward(client, [e.input for e in part])
        preds.extend(result.outputs())
        rows.extend(result.probs)
        if on_chunk is not None:
            on_chunk(min(start + chunk, len(examples)), len(examples))
    out, prior = graph.output, None
    if out.classes and out.calibration != "none":
        prior = calib.split_prior(client, out, rows)
        preds = [calib.decide(out.classes, row, prior) for row in rows]
    correct = [bool(check(p, e.target)) for p, e in zip(preds, examples, strict=True)]
    return Evaluation(sum(correct) / len(correct), preds, correct, prior)
