"""VI with a calibrated output layer: the posterior weights use calibrated class probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_vi import CLASS_LOGITS, make

from dlnflow.optim.vi import VariationalChain


def probs(logits: tuple[float, float]) -> list[float]:
    z = math.exp(logits[0]) + math.exp(logits[1])
    return [math.exp(v) / z for v in logits]


def test_posterior_weights_use_the_batch_calibrated_likelihood_of_the_answer() -> None:
    ctx, _ = make()
    ctx.graph.output.calibration = "batch"
    post = VariationalChain(ctx).step(1)["layers"]["think"]["posterior"][0]
    assert post["texts"] == ["h0", "h1", "h2"]
    rows = [probs(CLASS_LOGITS[h]) for h in ("h0", "h1", "h2")]
    prior = [sum(r[k] for r in rows) / 3 for k in (0, 1)]  # the mean over the texts being scored

    def yes(row: list[float]) -> float:
        scaled = [row[0] / prior[0], row[1] / prior[1]]
        return scaled[0] / sum(scaled)

    logw = np.array([math.log(yes(r)) + s for r, s in zip(rows, (-1.0, -2.0, -0.5), strict=True)])
    w = np.exp(logw - logw.max())
    w /= w.sum()
    assert post["weights"] == pytest.approx(list(w), abs=1e-6)
    raw = np.array([math.log(r[0]) + s for r, s in zip(rows, (-1.0, -2.0, -0.5), strict=True)])
    assert not np.allclose(np.exp(raw - raw.max()) / np.exp(raw - raw.max()).sum(), w, atol=1e-3)
