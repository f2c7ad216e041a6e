"""Statistics of the accuracy tables: paired bootstrap intervals and predicted-label counts.

Pure functions of per-example outcomes, so they are tested on hand-made predictions.

The paired bootstrap compares two methods on *the same* test examples. Each method may have run
with several training seeds; its outcomes are a seeds x examples table of right (1) and wrong
(0). The statistic is the mean over seeds and examples of method A minus that of method B. A
resample draws test examples with replacement (the same draw for every seed and both methods, so
the pairing by example is kept) and recomputes the statistic; the interval is the 2.5th and
97.5th percentile of 10,000 resamples, drawn from a fixed seed so a report is reproducible.
Seeds are held fixed: the interval answers "would this difference hold on other test examples
from the same data", not "on other training seeds" (each seed's own difference is shown too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
BOOTSTRAP_SEED = 14
CHUNK = 1_000  # resamples drawn at once (bounds memory: CHUNK x examples indices)


@dataclass(frozen=True)
class Interval:
    """A difference of accuracies (fractions) with its bootstrap interval."""

    diff: float
    low: float
    high: float
    n: int

    @property
    def above_zero(self) -> bool:
        return self.low > 0.0

    def text(self) -> str:
        """``+4.0 [+0.5, +7.5]`` in points."""
        return f"{100 * self.diff:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


def correct_table(predicted: Sequence[Sequence[str]], gold: Sequence[str]) -> np.ndarray:
    """Seeds x examples table of 1 (right) and 0 (wrong)."""
    table = np.array([[p == g for p, g in zip(row, gold, strict=True)] for row in predicted], dtype=float)
    return table.reshape(len(predicted), len(gold))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = 0.95) -> Interval:
    """Mean accuracy of ``a`` minus ``b`` (each seeds x examples, same examples in the same order)
    with its paired percentile bootstrap interval."""
    a, b = np.atleast_2d(a).astype(float), np.atleast_2d(b).astype(float)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired outcomes need the same examples: {a.shape[1]} against {b.shape[1]}")
    n = a.shape[1]
    per_example = a.mean(axis=0) - b.mean(axis=0)  # the seed-mean difference on each example
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        stats[start:start + size] = per_example[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Interval(float(per_example.mean()), float(low), float(high), n)


def label_counts(predictions: Sequence[str]) -> list[tuple[str, int]]:
    """Predicted labels with their counts, most frequent first (ties by label)."""
    return sorted(Counter(predictions).items(), key=lambda kv: (-kv[1], kv[0]))


def counts_text(predictions: Sequence[str]) -> str:
    """``Yes 120, No 30``."""
    return ", ".join(f"{label} {count}" for label, count in label_counts(predictions))


def top_share(predictions: Sequence[str]) -> float:
    """Share of the most frequent predicted label (1.0: one label for every input)."""
    counts = label_counts(predictions)
    return counts[0][1] / len(predictions) if counts else 0.0
