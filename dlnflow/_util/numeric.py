"""Small numeric helpers shared by backends and optimizers."""

from __future__ import annotations

import math
from collections.abc import Sequence


def softmax(values: Sequence[float]) -> list[float]:
    """Normalised probabilities from log-probabilities (shifted by the maximum for stability).

    >>> [round(p, 3) for p in softmax([0.0, math.log(3.0)])]
    [0.25, 0.75]
    """
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on a tie (as ``numpy.argmax``).

    >>> argmax([0.2, 0.5, 0.5])
    1
    """
    return max(range(len(values)), key=values.__getitem__)
