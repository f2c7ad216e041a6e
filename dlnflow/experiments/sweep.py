"""Running a sweep: every run of a :class:`~dlnflow.experiments.matrix.Matrix`, in order, resumably.

For each run the spec is compiled with the run's settings, bound to the cache, and checked
against its run folder: a finished run with the same fingerprint is skipped; any other is
trained (calls already in the cache are replayed for free). A budget covers the whole command:
each run gets what the runs before it left over, and the sweep stops before the call that
would exceed it. When every run has finished, the spec's lock file gets the prompts of the
best run (the best seed of the grid point with the best mean dev accuracy) and a ``sweep``
section with the summary of every point.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlnflow.core.errors import BudgetExceeded
from dlnflow.core.protocols import RunTracker
from dlnflow.experiments.aggregate import PointResult, best_point, group_points
from dlnflow.experiments.matrix import Matrix, RunPoint
from dlnflow.lockfile import lock as lockmod
from dlnflow.spec.overrides import apply_overrides
from dlnflow.spec.pipeline import Pipeline
from dlnflow.spec.settings import BudgetSettings
from dlnflow.training.network import Network
from dlnflow.training.runs import SUMMARY, fingerprint, finished_summary, run_dir_for
from dlnflow.training.trainer import Progress, Trainer

Listener = Callable[[dict[str, Any]], None]
Predictor = Callable[[Network, str], "dict[str, Any] | None"]
"""Called before each run is trained, with its network and label: the predicted calls and tokens to
store beside the actual ones (see :func:`dlnflow.planning.sweep.predict_run`)."""
TrackerFor = Callable[["RunState"], "RunTracker | None"]
"""Gives a run of the sweep its tracker (or ``None``); see :mod:`dlnflow.tracking`."""


@dataclass
class RunState:
    """One run of the sweep: its settings, its network (models not loaded yet) and its folder."""

    index: int
    point: RunPoint
    net: Network
    run_dir: Path
    fingerprint: str
    summary: dict[str, Any] | None = None
    skipped: bool = False
    worker: str = ""
    """``host:pid`` of the process that trained the run when it ran outside this one."""

    @property
    def metrics(self) -> dict[str, float] | None:
        return None if self.summary is None else self.summary.get("metrics")


def _left(limit: int | None, spent: int) -> int | None:
    return None if limit is None else max(limit - spent, 0)


class Sweep:
    """The runs of ``matrix`` over ``base`` (a compiled spec), bound to one cache."""

    def __init__(self, base: Pipeline, matrix: Matrix, cache_dir: Path, cache_mode: str = "use",
                 predict: Predictor | None = None, cache_remote: str | None = None):
        self.base = base
        self.predict = predict
        self.matrix = matrix
        self.cache_dir = cache_dir
        self.cache_mode = cache_mode
        self.cache_remote = cache_remote
        self.states = [self._state(i, point) for i, point in enumerate(matrix.runs())]

    def _state(self, index: int, point: RunPoint) -> RunState:
        pipeline = apply_overrides(self.base, point.overrides)
        net = Network(pipeline, cache_dir=self.cache_dir, cache_mode=self.cache_mode,  # type: ignore[arg-type]
                      cache_remote=self.cache_remote)
        fp = fingerprint(pipeline, net.dataset.digest)
        run_dir = run_dir_for(pipeline, point.overrides, net.dataset.digest)
        return RunState(index, point, net, run_dir, fp, finished_summary(run_dir, fp))

    @property
    def pending(self) -> list[RunState]:
        return [s for s in self.states if s.summary is None]

    # -- training -------------------------------------------------------------------------------
    def run(self, budget: BudgetSettings | None = None, progress: Progress | None = None,
            listen: Listener | None = None, predict: bool = True, track: TrackerFor | None = None,
            ) -> list[RunState]:
        """Train every unfinished run in order; ``listen`` hears ``start``/``done``/``skip`` events.

        ``track(state)`` may give a tracker (:mod:`dlnflow.tracking`) per run; a skipped run's
        tracker is fed from its run folder.
        """
        budget = budget or BudgetSettings()
        tell = listen or (lambda event: None)
        calls = tokens = 0
        anchor: Network | None = None  # keeps the first run's models loaded for the runs after it
        try:
            for s in self.states:
                if s.summary is not None:
                    s.skipped = True
                    tell({"event": "skip", "run": s})
                    self._replay(s, track)
                    continue
                tell({"event": "start", "run": s})
                s.net.override(budget=BudgetSettings(_left(budget.max_calls, calls),
                                                     _left(budget.max_tokens, tokens)))
                try:
                    usage = self._train(s, progress, predict, track(s) if track else None)
                except BudgetExceeded as exc:
                    raise BudgetExceeded(self._stopped(s, budget, calls, tokens, exc)) from exc
                finally:
                    if anchor is None:
                        anchor = s.net
                    else:
                        s.net.close()
                calls += usage["backend_calls"]
                tokens += usage["prompt_tokens"] + usage["completion_tokens"]
                tell({"event": "done", "run": s})
        finally:
            if anchor is not None:
                anchor.close()
        return self.states

    @staticmethod
    def _replay(s: RunState, track: TrackerFor | None) -> None:
        tracker = track(s) if track else None
        if tracker is not None:
            tracker.replay(s.run_dir)

    def _train(self, s: RunState, progress: Progress | None, predict: bool, tracker: RunTracker | None,
               ) -> dict[str, Any]:
        prediction = self.predict(s.net, s.point.label) if predict and self.predict is not None else None
        trainer = Trainer(s.net, progress, write_lock=False, run_dir=s.run_dir, prediction=prediction,
                          overrides=s.point.overrides, tracker=tracker)
        result = trainer.fit()
        s.summary = json.loads((s.run_dir / SUMMARY).read_text(encoding="utf-8"))
        return result.usage

    def _stopped(self, s: RunState, budget: BudgetSettings, calls: int, tokens: int,
                 exc: BudgetExceeded) -> str:
        done = sum(1 for x in self.states if x.summary is not None)
        spent = []
        if budget.max_calls is not None:
            spent.append(f"{calls} of {budget.max_calls} calls")
        if budget.max_tokens is not None:
            spent.append(f"{tokens} of {budget.max_tokens} tokens")
        earlier = ""
        if calls or tokens:
            earlier = f"; earlier runs spent {' and '.join(spent)} of the sweep's budget"
        return (f"sweep stopped in run {s.index + 1}/{len(self.states)} ({s.point.label}) with {done} run(s) "
                f"finished{earlier}. {exc}")

    # -- results ---------------------------------------------------------------------------------
    def points(self, confidence: float = 0.95) -> list[PointResult]:
        rows = [(dict(s.point.settings), s.point.seed, s.metrics) for s in self.states]
        return group_points(rows, confidence)  # type: ignore[arg-type]

    def best(self) -> tuple[int, RunState] | None:
        """The best grid point (by mean dev) and its best finished run (by dev; ties: the first)."""
        points = self.points()
        i = best_point(points)
        if i is None:
            return None
        runs = [s for s in self.states if s.point.settings == points[i].settings and s.metrics is not None]
        top = max(runs, key=lambda s: (float(s.metrics["dev"]), -s.index))  # type: ignore[index]
        return i, top

    def summary(self) -> dict[str, Any]:
        """The sweep as plain data (also the lock's ``sweep`` section): matrix, points, best run."""
        points = self.points()
        best = self.best()
        out: dict[str, Any] = {**self.matrix.as_dict(), "points": [p.compact() for p in points]}
        if best is not None:
            i, s = best
            out["best"] = {"settings": dict(s.point.settings), "seed": s.point.seed, "run": s.run_dir.name,
                           "overrides": dict(s.point.overrides), "point": i}
        return out

    def write_lock(self) -> Path | None:
        """Write the spec's lock from the best run, with the sweep summary; ``None`` when no run finished."""
        best = self.best()
        if best is None:
            return None
        s = best[1]
        assert s.summary is not None
        cfg = s.summary["config"]
        metrics = {k: round(float(v), 6) for k, v in sorted(s.summary["metrics"].items())}
        run = {k: s.summary[k] for k in ("iterations_run", "best_iteration", "stopped_early")}
        data = cfg["data"]
        lock = lockmod.build_lock(s.net.pipeline, cfg["identities"], data["sha256"], data["source"],
                                  s.summary["prompts"], metrics, run, s.summary.get("calibration"))
        lock["sweep"] = self.summary()
        path = self.base.lock_path
        lockmod.write_lock(path, lock)
        return path
