"""Statistics over repeated runs: mean, standard deviation and a t confidence interval.

A sweep trains the same settings with several seeds; papers report such results as "mean of
3 seeds +- a 95% confidence interval". With ``n`` values of sample standard deviation ``s`` the
interval is ``mean +- t(1 - alpha/2, n - 1) * s / sqrt(n)``, where ``t`` is the quantile of
Student's t distribution, taken from ``scipy.stats.t`` (SciPy is imported on first use: it
costs a few hundred milliseconds that ``dlnflow --help`` should not pay).

>>> round(t_quantile(0.975, 2), 4)
4.3027
>>> s = summarize([0.5, 0.6, 0.7])
>>> round(s.mean, 3), round(s.std, 3), round(s.half_width, 3)
(0.6, 0.1, 0.248)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("dev", "test", "dev_before", "test_before")
"""The metrics every run reports, in the order tables show them."""


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``0.5 <= p < 1``), from SciPy.

    >>> round(t_quantile(0.975, 1), 3), round(t_quantile(0.975, 30), 4)
    (12.706, 2.0423)
    """
    from scipy.stats import t

    if df < 1:
        raise ValueError("a t quantile needs at least one degree of freedom")
    if not 0.5 <= p < 1:
        raise ValueError("p must lie in [0.5, 1)")
    return float(t.ppf(p, df))


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and a confidence interval of ``n`` values.

    ``std`` and ``half_width`` are ``None`` for a single value (no spread can be estimated).
    """

    n: int
    mean: float
    std: float | None
    half_width: float | None
    confidence: float

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    def as_dict(self) -> dict[str, object]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 6)

        return {"n": self.n, "mean": r(self.mean), "std": r(self.std), "ci_half_width": r(self.half_width),
                "ci_low": r(self.low), "ci_high": r(self.high), "confidence": self.confidence}

    def compact(self) -> dict[str, object]:
        """Mean, standard deviation and interval only (for the lock file)."""
        d = self.as_dict()
        ci = None if self.half_width is None else [d["ci_low"], d["ci_high"]]
        return {"mean": d["mean"], "std": d["std"], "ci95" if self.confidence == 0.95 else "ci": ci}

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        """``62.2 +- 4.1`` (scaled; a single value shows no interval).

        >>> summarize([0.5, 0.7]).text()
        '60.0 ± 127.1'
        """
        if self.half_width is None:
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample standard deviation (n - 1) and the t interval of ``values``."""
    if not values:
        raise ValueError("nothing to summarize")
    arr = np.asarray(values, dtype=float)
    n = len(arr)
    mean = float(arr.mean())
    if n < 2:
        return Summary(n, mean, None, None, confidence)
    std = float(arr.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, half, confidence)


def summarize_metrics(runs: Sequence[dict[str, float]], confidence: float = 0.95) -> dict[str, Summary]:
    """Per metric of :data:`METRICS` (those every run has): the :class:`Summary` over ``runs``."""
    out: dict[str, Summary] = {}
    for name in METRICS:
        values = [float(m[name]) for m in runs if name in m]
        if values and len(values) == len(runs):
            out[name] = summarize(values, confidence)
    return out


# -- per grid point ---------------------------------------------------------------------------------
@dataclass
class PointResult:
    """The runs of one grid point: which seeds finished, and the summary of each metric over them."""

    settings: dict[str, object]
    seeds: list[int]
    missing: list[int]
    metrics: dict[str, Summary]

    def as_dict(self) -> dict[str, object]:
        return {"settings": self.settings, "seeds": self.seeds, "missing": self.missing,
                "metrics": {k: v.as_dict() for k, v in self.metrics.items()}}

    def compact(self) -> dict[str, object]:
        """The point as the lock file records it: settings, seeds and ``{mean, std, ci}`` per metric."""
        out: dict[str, object] = {"settings": self.settings, "seeds": self.seeds}
        out.update({k: v.compact() for k, v in self.metrics.items()})
        return out


def group_points(rows: Sequence[tuple[dict[str, object], int, dict[str, float] | None]],
                 confidence: float = 0.95) -> list[PointResult]:
    """``(settings, seed, metrics or None)`` per run -> one :class:`PointResult` per distinct settings,
    in first-seen order. Runs without metrics (not finished) are listed as missing."""
    order: list[str] = []
    groups: dict[str, list[tuple[dict[str, object], int, dict[str, float] | None]]] = {}
    for row in rows:
        key = repr(sorted(row[0].items()))
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append(row)
    out = []
    for key in order:
        runs = groups[key]
        done = [(seed, m) for _, seed, m in runs if m is not None]
        out.append(PointResult(dict(runs[0][0]), [s for s, _ in done], [s for _, s, m in runs if m is None],
                               summarize_metrics([m for _, m in done], confidence) if done else {}))
    return out


def best_point(points: Sequence[PointResult], metric: str = "dev") -> int | None:
    """Index of the point with the highest mean ``metric`` (ties: the first); ``None`` if none has it."""
    best: int | None = None
    for i, p in enumerate(points):
        if metric not in p.metrics:
            continue
        if best is None or p.metrics[metric].mean > points[best].metrics[metric].mean + 1e-12:
            best = i
    return best


def markdown_table(points: Sequence[PointResult], label: Callable[[dict[str, object]], str],
                   metrics: Sequence[str] = METRICS) -> str:
    """A markdown table: one row per point, each metric as ``mean ± CI half-width`` in percent."""
    confidence = next((s.confidence for p in points for s in p.metrics.values()), 0.95)
    head = ["settings", "seeds"] + [f"{m} (%)" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        seeds = ",".join(map(str, p.seeds))
        if p.missing:
            seeds += f" (missing {','.join(map(str, p.missing))})"
        cells = [p.metrics[m].text() if m in p.metrics else "-" for m in metrics]
        lines.append("| " + " | ".join([label(p.settings), seeds, *cells]) + " |")
    lines.append("")
    lines.append(f"mean ± half-width of the {round(confidence * 100)}% t confidence interval over seeds "
                 "(no interval with a single seed)")
    return "\n".join(lines)
