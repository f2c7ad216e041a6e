"""Calibration of a classifier layer's class probabilities.

A small model often gives one class most of the probability whatever the input. Calibration
divides each class probability by a *prior*, the probability the layer gives that class when
the input tells it nothing, and renormalises:

    q_k = (p_k / prior_k) / sum_j (p_j / prior_j)

Dividing (rather than subtracting the prior and taking the argmax) keeps ``q`` a probability
vector, so the calibrated log-probability of the correct class can score prompt candidates
just like the raw one. Both give the same decision when the prior is flat.

Methods (``output.calibration`` in a spec):

- ``none``: the raw probabilities decide;
- ``batch``: the prior is the mean class-probability vector over the examples being decided
  or scored (batch calibration: no extra model calls). A whole split uses its own mean; a fixed
  prior (the one estimated on dev and written to the lock file) decides inputs that come alone;
- ``content_free``: the prior is the mean over content-free inputs (``"N/A"``, ``""``,
  ``"[MASK]"``) rendered with the layer's template and prompt (contextual calibration: three
  more classify calls per prompt, cached like any other).

>>> [round(q, 3) for q in calibrate([0.8, 0.2], [0.8, 0.2])]
[0.5, 0.5]
>>> [round(q, 3) for q in calibrate([0.7, 0.3], [0.9, 0.1])]
[0.206, 0.794]
>>> mean_probs([[0.9, 0.1], [0.5, 0.5]])
[0.7, 0.3]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from dlnflow._util.numeric import argmax
from dlnflow.core.backend import Request
from dlnflow.core.protocols import Caller

METHODS = ("none", "batch", "content_free")
DEFAULT = "none"
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
FLOOR = 1e-12
MIN_BATCH = 2  # a batch prior from one example would make every class equally likely


class Classifier(Protocol):
    """What calibration needs of a classifier layer (:class:`dlnflow.graph.layers.Layer` has it)."""

    name: str
    inputs: tuple[str, ...]
    classes: tuple[str, ...] | None
    model: str
    calibration: str
    prior: tuple[float, ...] | None

    def render(self, values: dict[str, str], prompt: str | None = None) -> str: ...

    def classify_request(self, context: str) -> Request: ...


def mean_probs(rows: Sequence[Sequence[float]]) -> list[float]:
    """The mean probability vector of ``rows`` (all of one length)."""
    n = len(rows)
    return [sum(row[k] for row in rows) / n for k in range(len(rows[0]))]


def calibrate(probs: Sequence[float], prior: Sequence[float] | None) -> list[float]:
    """``probs`` divided by ``prior`` and renormalised (unchanged without a prior)."""
    if prior is None:
        return list(probs)
    if len(prior) != len(probs):
        raise ValueError(f"a prior over {len(prior)} classes cannot calibrate {len(probs)} class probabilities")
    scaled = [p / max(q, FLOOR) for p, q in zip(probs, prior, strict=True)]
    total = sum(scaled)
    if total <= 0:
        return [1.0 / len(probs)] * len(probs)
    return [s / total for s in scaled]


def content_free_contexts(layer: Classifier, prompt: str | None = None) -> list[str]:
    """The layer's full text for each content-free input (every input of the layer set to it)."""
    return [layer.render(dict.fromkeys(layer.inputs, text), prompt) for text in CONTENT_FREE_INPUTS]


def content_free_prior(client: Caller, layer: Classifier, prompt: str | None = None) -> list[float]:
    """Mean class probabilities of the content-free inputs under ``prompt`` (the layer's own by default)."""
    requests = [layer.classify_request(c) for c in content_free_contexts(layer, prompt)]
    answers = client.run(layer.model, requests)
    return mean_probs([list(a["probs"]) for a in answers])


def prior_for(
    client: Caller, layer: Classifier, rows: Sequence[Sequence[float]], prompt: str | None = None,
    use_fixed: bool = True,
) -> list[float] | None:
    """The prior that calibrates ``rows`` (the class probabilities of the examples at hand).

    ``None`` means no calibration: method ``none``, or ``batch`` over fewer than
    :data:`MIN_BATCH` examples with no fixed prior. With ``use_fixed`` a ``batch`` layer's fixed
    prior (from the lock file) wins over the mean of ``rows``; candidate scoring passes
    ``use_fixed=False`` because the fixed prior belongs to the locked prompt, not a candidate.
    """
    method = layer.calibration
    if method == "content_free":
        return content_free_prior(client, layer, prompt)
    if method != "batch":
        return None
    fixed = layer.prior
    if use_fixed and fixed is not None:
        return list(fixed)
    if len(rows) < MIN_BATCH:
        return None
    return mean_probs(rows)


def decide(classes: Sequence[str], probs: Sequence[float], prior: Sequence[float] | None) -> str:
    """The class with the largest calibrated probability (the first one on a tie)."""
    return classes[argmax(calibrate(probs, prior))]


def split_prior(
    client: Caller, layer: Classifier, rows: Sequence[Sequence[float]]
) -> list[float] | None:
    """The prior for a whole split: its own mean for ``batch`` (the fixed prior only when the split
    is too small for a mean), the content-free prior for ``content_free``, ``None`` for ``none``."""
    method = layer.calibration
    if method == "batch" and len(rows) >= MIN_BATCH:
        return mean_probs(rows)
    return prior_for(client, layer, rows)


def lock_entry(method: str, prior: Sequence[float] | None) -> dict[str, object] | None:
    """What the lock file records for a layer: ``{method, prior}`` (``None`` for method ``none``)."""
    if method == "none" or prior is None:
        return None
    return {"method": method, "prior": [round(float(p), 6) for p in prior]}


def fixed_prior(entry: object, method: str, n_classes: int) -> tuple[float, ...] | None:
    """The prior in a lock entry when it fits the layer (same method, one number per class)."""
    if not isinstance(entry, dict) or entry.get("method") != method:
        return None
    prior = entry.get("prior")
    if not isinstance(prior, list) or len(prior) != n_classes:
        return None
    if not all(isinstance(p, int | float) and not isinstance(p, bool) and p >= 0 for p in prior):
        return None
    return tuple(float(p) for p in prior)


def load_fixed_priors(layers: Iterable[Classifier], entries: Mapping[str, object]) -> list[str]:
    """Give each classifier layer the fixed prior its lock entry holds for its method; names those set.

    A layer whose entry is missing, of another method or of the wrong length gets none (it then
    calibrates by the inputs it is given, as without a lock).
    """
    named = []
    for layer in layers:
        if not layer.classes:
            continue
        layer.prior = fixed_prior(entries.get(layer.name), layer.calibration, len(layer.classes))
        if layer.prior is not None:
            named.append(layer.name)
    return named
