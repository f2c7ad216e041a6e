"""Where a run's time goes: seconds per operation, tokens, and remote request latency.

The :class:`~dlnflow.client.Client` times every batch it sends to a backend and files the seconds
under the batch's operation (``classify``, ``score``, ``generate``; a batch that mixes operations
is split by request count). Backends may add counters of their own through an optional
``counters()`` method returning running totals:

- ``prompt_evaluated`` / ``prompt_reused``: prompt tokens the model computed vs. took from its
  KV cache (the embedded backend knows both; a remote server reports reused tokens only when it
  says so, e.g. OpenAI's ``cached_tokens``);
- ``requests_<kind>``: HTTP requests of a remote backend by kind (``next_token``, ``echo``,
  ``generate``, ``tokenize``, ``probe``).

Remote backends also keep ``latencies``, the seconds of every HTTP request they sent.

:meth:`Timing.summary` turns this into the ``timing`` block of ``--json``, ``summary.json`` and the
run log; :func:`timing_lines` renders it for people (the markdown report, ``train -v``).

>>> t = Timing()
>>> t.record(["generate", "generate"], 2.0, completion_tokens=40)
>>> t.record(["classify"], 1.0)
>>> s = t.summary(wall_seconds=4.0)
>>> s["operations"]["generate"]["seconds"], s["operations"]["generate"]["tokens_generated"]
(2.0, 40)
>>> s["model_seconds"], s["other_seconds"]
(3.0, 1.0)
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OPERATION_ORDER = ("classify", "score", "generate")


@dataclass
class OpStats:
    """Totals of one operation."""

    seconds: float = 0.0
    calls: int = 0
    prompt_tokens: int = 0
    tokens_generated: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "tokens_generated": self.tokens_generated,
                "seconds_per_call": round(self.seconds / self.calls, 4) if self.calls else None}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; ``None`` for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([5.0], 0.95), percentile([], 0.5)
    (2.5, 5.0, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Timing:
    """Thread-safe totals of the model work of one client."""

    ops: dict[str, OpStats] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, ops: Sequence[str], seconds: float, prompt_tokens: int = 0, completion_tokens: int = 0,
               counters: Mapping[str, int] | None = None) -> None:
        """File one backend batch of ``ops`` (one entry per request) that took ``seconds``.

        Seconds and tokens of a mixed batch are shared out by request count.
        """
        if not ops:
            return
        share = Counter(ops)
        with self._lock:
            for op, n in share.items():
                stats = self.ops.setdefault(op, OpStats())
                frac = n / len(ops)
                stats.seconds += seconds * frac
                stats.calls += n
                stats.prompt_tokens += round(prompt_tokens * frac)
                stats.tokens_generated += round(completion_tokens * frac)
            self.counters.update(counters or {})

    def summary(self, wall_seconds: float | None = None, latencies: Sequence[float] = ()) -> dict[str, Any]:
        """The ``timing`` block: per operation, model vs. other seconds, tokens, remote latency.

        ``latencies`` are the seconds of every HTTP request the remote backends sent.
        """
        with self._lock:
            ops = {op: self.ops[op].as_dict() for op in sorted(self.ops, key=_op_rank)}
            model = sum(s.seconds for s in self.ops.values())
            counters = dict(self.counters)
        out: dict[str, Any] = {
            "operations": ops,
            "model_seconds": round(model, 3),
            "tokens_generated": sum(o["tokens_generated"] for o in ops.values()),
            "prompt_tokens": {"evaluated": counters.get("prompt_evaluated"),
                              "reused": counters.get("prompt_reused")},
        }
        if wall_seconds is not None:
            out["wall_seconds"] = round(wall_seconds, 3)
            out["other_seconds"] = round(max(wall_seconds - model, 0.0), 3)
        if latencies:
            median, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
            out["remote"] = {"requests": len(latencies), "median_seconds": round(median or 0.0, 4),
                             "p95_seconds": round(p95 or 0.0, 4),
                             "by_kind": {k[len("requests_"):]: v for k, v in sorted(counters.items())
                                         if k.startswith("requests_")}}
        return out


def _op_rank(op: str) -> int:
    return OPERATION_ORDER.index(op) if op in OPERATION_ORDER else len(OPERATION_ORDER)


def counter_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """``after - before`` for every counter in ``after`` (a backend's running totals).

    >>> counter_delta({"a": 2}, {"a": 5, "b": 1})
    {'a': 3, 'b': 1}
    """
    return {k: int(v) - int(before.get(k, 0)) for k, v in after.items()}


def timing_lines(timing: Mapping[str, Any] | None) -> list[str]:
    """One plain line per operation and the token and latency totals (``train -v``, reports)."""
    if not timing:
        return []
    wall = timing.get("wall_seconds")
    lines = []
    for op, s in (timing.get("operations") or {}).items():
        share = f" ({100 * s['seconds'] / wall:.0f}%)" if wall else ""
        gen = f", {s['tokens_generated']} tokens generated" if s.get("tokens_generated") else ""
        lines.append(f"{op}: {s['seconds']:.1f} s{share} in {s['calls']} calls{gen}")
    if wall is not None:
        lines.append(f"other (cache, templates, bookkeeping): {timing.get('other_seconds', 0.0):.1f} s "
                     f"of {wall:.1f} s")
    prompt = timing.get("prompt_tokens") or {}
    if prompt.get("evaluated") is not None or prompt.get("reused") is not None:
        lines.append(f"prompt tokens: {_n(prompt.get('evaluated'))} evaluated, "
                     f"{_n(prompt.get('reused'))} reused from the KV cache")
    remote = timing.get("remote")
    if remote:
        kinds = ", ".join(f"{k} {v}" for k, v in (remote.get("by_kind") or {}).items())
        lines.append(f"remote requests: {remote['requests']} ({kinds}); latency median "
                     f"{remote['median_seconds']:.3f} s, p95 {remote['p95_seconds']:.3f} s")
    return lines


def _n(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def timing_markdown(timing: Mapping[str, Any] | None) -> list[str]:
    """The report's "Where the time went" section (empty when the run recorded no timing)."""
    if not timing or not timing.get("operations"):
        return []
    wall = timing.get("wall_seconds")
    lines = ["## Where the time went", "",
             "| operation | seconds | share of the run | calls | s per call | tokens generated |",
             "|---|---:|---:|---:|---:|---:|"]
    for op, s in timing["operations"].items():
        share = f"{100 * s['seconds'] / wall:.0f}%" if wall else "—"
        per = "—" if s.get("seconds_per_call") is None else f"{s['seconds_per_call']:.3f}"
        lines.append(f"| {op} | {s['seconds']:.1f} | {share} | {s['calls']:,} | {per} | "
                     f"{s.get('tokens_generated', 0):,} |")
    if wall:
        other = float(timing.get("other_seconds", 0.0))
        lines.append(f"| other (cache, templates, bookkeeping) | {other:.1f} | {100 * other / wall:.0f}% | | | |")
    lines.append("")
    extra = [line for line in timing_lines(timing) if line.startswith(("prompt tokens", "remote"))]
    lines += [f"- {line}" for line in extra]
    return lines + ([""] if extra else [])
