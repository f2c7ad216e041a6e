"""The training loop shared by every method.

1. Evaluate the initial prompts on dev and test (the 0-shot numbers, "before").
2. ``prepare()`` the optimizer (baselines set their prompt here and stop).
3. For each iteration: one optimizer ``step``; every ``validate_every`` iterations (and at the
   last) evaluate on dev, remember the best-dev prompts, stop early after ``patience``
   validations without gain.
4. Restore the best-dev prompts, evaluate on test, write the lock file and the run summary.

Every model call is cached, so a rerun with a warm cache replays the same run without calling a
model, and a killed run continues from where it stopped. A run that hits its budget stops before
the call that would exceed it; the partial log ends with a ``stopped`` record, and everything paid
for so far stays in the cache for the rerun.

The summary (``summary.json``) carries a ``config`` block (see :func:`dlnflow.training.runs.run_config`)
that tells a sweep whether the run is already finished, and, when the caller planned the run
first (:mod:`dlnflow.planning.dryrun`), the ``predicted`` calls and tokens beside the actual ones.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dlnflow.core.errors import BudgetExceeded, WriteError
from dlnflow.core.protocols import Optimizer, RunTracker
from dlnflow.core.registry import OPTIMIZERS
from dlnflow.data.dataset import Dataset
from dlnflow.graph.calibration import lock_entry
from dlnflow.lockfile import lock as lockmod
from dlnflow.optim.context import TrainContext
from dlnflow.optim.demos import ensure_demos
from dlnflow.runtime.client import Client
from dlnflow.spec.pipeline import Pipeline
from dlnflow.training.evaluate import evaluate
from dlnflow.training.runs import RunLog, run_config, run_dir_for

Progress = Callable[[dict[str, Any]], None]


class Network(Protocol):
    """What the trainer needs of a network: its pipeline, client, data and model identities."""

    pipeline: Pipeline
    client: Client
    dataset: Dataset

    def identities(self) -> dict[str, dict[str, Any]]: ...


@dataclass
class TrainResult:
    metrics: dict[str, float]
    lock_path: Path
    run_dir: Path
    usage: dict[str, Any]
    wall_seconds: float
    iterations_run: int
    best_iteration: int
    stopped_early: bool
    prompts: dict[str, str] = field(default_factory=dict)
    predicted: dict[str, Any] | None = None
    lock_note: str | None = None
    timing: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        u = self.usage
        out = {
            "backend_calls": u["backend_calls"],
            "cache_hits": u["cache_hits"],
            "prompt_tokens": u["prompt_tokens"],
            "completion_tokens": u["completion_tokens"],
            "saved_prompt_tokens": u["saved_prompt_tokens"],
            "saved_completion_tokens": u["saved_completion_tokens"],
            "retries": u["retries"],
            "wall_seconds": round(self.wall_seconds, 3),
            "metrics": self.metrics,
            "lock": str(self.lock_path),
            "run_dir": str(self.run_dir),
            "iterations_run": self.iterations_run,
            "best_iteration": self.best_iteration,
            "stopped_early": self.stopped_early,
            "prompts": self.prompts,
        }
        if self.predicted is not None:
            out["predicted"] = self.predicted
        if self.lock_note is not None:
            out["lock_note"] = self.lock_note
        if self.timing is not None:
            out["timing"] = self.timing
        return out


def label_counts(predictions: list[str]) -> dict[str, int]:
    """How often each answer was predicted (most frequent first, then by name).

    >>> label_counts(["red", "blue", "red"])
    {'red': 2, 'blue': 1}
    """
    counts = Counter(predictions)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def run_cost(models: dict[str, dict[str, Any]], usage: dict[str, Any]) -> float | None:
    """Money the run's real calls cost when every model has the same ``price`` (else ``None``,
    since the usage counters do not split tokens by model).

    >>> run_cost({"m": {"price": {"prompt_per_1k": 0.5, "completion_per_1k": 1.0}}},
    ...          {"prompt_tokens": 2000, "completion_tokens": 1000})
    2.0
    """
    prices = [m.get("price") for m in models.values()]
    if not prices or not all(isinstance(p, dict) for p in prices) or any(p != prices[0] for p in prices):
        return None
    price = prices[0]
    assert isinstance(price, dict)
    return round(usage["prompt_tokens"] / 1000 * float(price.get("prompt_per_1k", 0.0))
                 + usage["completion_tokens"] / 1000 * float(price.get("completion_per_1k", 0.0)), 6)


class _NoLog:
    """Stands in for :class:`RunLog` when a run must leave no trace (a dry run's planning pass)."""

    directory = Path(".")

    def write(self, record: dict[str, Any]) -> None:
        """Drops the record: this log keeps nothing."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Nothing to finish."""

    def abandon(self) -> None:
        """Nothing to remove."""


class Trainer:
    """Trains ``net``'s pipeline.

    ``run_dir`` overrides the run folder (a sweep names folders from its overrides too);
    ``record=False`` writes no run folder at all; ``prediction`` (a dry run's numbers) and
    ``overrides`` (a sweep's settings for this run) are stored in the summary. A ``tracker``
    (:mod:`dlnflow.tracking`) hears every log record and the finished summary; it never
    raises, so tracking cannot change or fail a run.
    """

    def __init__(self, net: Network, progress: Progress | None = None, write_lock: bool = True, *,
                 run_dir: Path | None = None, record: bool = True, prediction: dict[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None, tracker: RunTracker | None = None):
        self.net = net
        self.progress = progress or (lambda event: None)
        self.write_lock = write_lock
        self.run_dir = run_dir
        self.record = record
        self.prediction = prediction
        self.overrides = overrides
        self.tracker = tracker
        self._iteration = 0
        self._labels: dict[str, int] = {}
        self._prior: list[float] | None = None

    def _usage(self) -> dict[str, Any]:
        return self.net.client.usage.as_dict()

    def _evaluate(self, split: str) -> float:
        """Accuracy on ``split``; the counts of each predicted label are kept in ``self._labels``."""
        net = self.net
        examples = getattr(net.dataset, split)

        def tick(done: int, total: int) -> None:
            self.progress({"event": "eval", "split": split, "done": done, "total": total,
                           "usage": self._usage()})

        result = evaluate(net.pipeline.graph, net.client, examples, net.pipeline.loss, on_chunk=tick)
        self._labels = label_counts(result.predictions)
        self._prior = result.prior
        return result.accuracy

    def _track_failure(self, why: str, run_dir: Path) -> None:
        if self.tracker is not None:
            self.tracker.failed(why, run_dir)

    def _track(self, record: dict[str, Any]) -> None:
        if self.tracker is not None:
            self.tracker.record(record)

    def fit(self) -> TrainResult:
        net = self.net
        p, t = net.pipeline, net.pipeline.train
        started = time.monotonic()
        graph = p.graph
        client = net.client
        if client.budget.max_tokens is not None:  # stop before crossing the token budget, not after
            client.budget = dataclasses.replace(client.budget, predict_tokens=True)
        for layer in graph:  # a locked calibration prior belongs to the locked prompt, not to training
            layer.prior = None
        ctx = TrainContext(graph, client, t, p.loss, list(net.dataset.train), p.backward_model)
        ensure_demos(graph, ctx.pool, t.seed)
        optimizer: Optimizer = OPTIMIZERS.get(t.method)(ctx)
        config = self._config() if self.record else {}
        log: RunLog | _NoLog = _NoLog()
        if self.record:
            log = RunLog(self.run_dir or run_dir_for(p, None, net.dataset.digest))
        try:
            result = self._loop(optimizer, ctx, log, started, config)
        except BudgetExceeded as exc:
            log.write({"iteration": self._iteration, "event": "stopped", "reason": "budget",
                       "message": str(exc), "prompts": graph.state(), "usage": self._usage()})
            log.abandon()
            where = f" The partial log is {log.directory / 'log.jsonl.partial'}." if self.record else ""
            self._track_failure(f"stopped by its budget: {exc}", log.directory)
            raise BudgetExceeded(f"training stopped before exceeding its budget: {exc}.{where}") from exc
        except BaseException as exc:
            log.abandon()
            self._track_failure(f"{type(exc).__name__}: {exc}", log.directory)
            raise
        return result

    def _config(self) -> dict[str, Any]:
        net = self.net
        data = net.dataset
        return run_config(net.pipeline, data.digest, data.source, net.identities(), self.overrides)

    def _loop(self, optimizer: Optimizer, ctx: TrainContext, log: RunLog | _NoLog, started: float,
              config: dict[str, Any]) -> TrainResult:
        net, p, t, graph = self.net, self.net.pipeline, self.net.pipeline.train, self.net.pipeline.graph
        self._iteration = 0
        metrics: dict[str, float] = {}
        labels: dict[str, dict[str, int]] = {}
        metrics["dev_before"] = self._evaluate("dev")
        labels["dev_before"] = self._labels
        dev_prior = self._prior  # the calibration prior on dev of the best prompts so far
        metrics["test_before"] = self._evaluate("test")
        labels["test_before"] = self._labels
        first = {"iteration": 0, "event": "before", "prompts": graph.state(),
                 "dev": metrics["dev_before"], "usage": self._usage()}
        log.write(first)
        self._track(first)
        prep = optimizer.prepare()
        iterative = optimizer.iterative
        best_dev, best_state, best_it = metrics["dev_before"], graph.state(), 0
        labels["dev"] = labels["dev_before"]
        if not iterative:
            best_dev = self._evaluate("dev")
            best_state = graph.state()
            labels["dev"] = self._labels
            dev_prior = self._prior
            prepared = {"iteration": 0, "event": "prepared", **prep, "dev": best_dev, "prompts": best_state}
            log.write(prepared)
            self._track(prepared)
        stale, stopped, it = 0, False, 0
        total = t.iterations if iterative else 0
        for it in range(1, total + 1):
            self._iteration = it
            self.progress({"event": "iteration", "iteration": it, "total": total, "best_dev": best_dev,
                           "usage": self._usage()})
            record = optimizer.step(it)
            record.update(iteration=it, event="step", prompts=graph.state())
            if it % max(t.validate_every, 1) == 0 or it == total:
                dev = self._evaluate("dev")
                record["dev"] = dev
                for name, prompt in graph.named_parameters():
                    if name.endswith(".prompt"):  # demonstrations are not prompts to remember
                        ctx.memory.add(name.rsplit(".", 1)[0], dev, prompt)
                if dev > best_dev + 1e-12:
                    best_dev, best_state, best_it, stale = dev, graph.state(), it, 0
                    labels["dev"] = self._labels
                    dev_prior = self._prior
                else:
                    stale += 1
                if t.patience is not None and stale >= t.patience:
                    stopped = True
            record["usage"] = self._usage()
            record["timing"] = net.client.timing_summary(time.monotonic() - started)
            log.write(record)
            self._track(record)
            if stopped:
                break
        graph.load_state(best_state)
        metrics["dev"] = best_dev
        metrics["test"] = self._evaluate("test")
        labels["test"] = self._labels
        iterations_run = it if iterative else 0
        wall = time.monotonic() - started
        lock_path, lock_note = p.lock_path, None
        entry = lock_entry(graph.output.calibration, dev_prior)  # the prior `run` decides single inputs by
        calibration = {graph.output.name: entry} if entry else {}
        if self.write_lock:
            lock = lockmod.build_lock(
                p, net.identities(), net.dataset.digest, net.dataset.source, graph.state(),
                {k: round(v, 6) for k, v in sorted(metrics.items())},
                {"iterations_run": iterations_run, "best_iteration": best_it, "stopped_early": stopped},
                calibration,
            )
            lock_path, lock_note = _write_lock(lock_path, lock, log)
        result = TrainResult(
            metrics={k: round(v, 6) for k, v in metrics.items()},
            lock_path=lock_path,
            run_dir=log.directory,
            usage=self._usage(),
            wall_seconds=wall,
            iterations_run=iterations_run,
            best_iteration=best_it,
            stopped_early=stopped,
            prompts=graph.state(),
            predicted=self.prediction,
            lock_note=lock_note,
            timing=net.client.timing_summary(wall),
        )
        summary = {**result.as_dict(), "config": config, "label_counts": labels}
        if calibration:
            summary["calibration"] = calibration
        cost = run_cost(p.models, result.usage)
        if cost is not None:
            summary["cost"] = cost
        log.finish(summary)
        if self.tracker is not None:
            self.tracker.finished(summary, log.directory, lock_path if self.write_lock else None)
        return result


def _write_lock(path: Path, lock: dict[str, Any], log: RunLog | _NoLog) -> tuple[Path, str | None]:
    """Write the lock beside the spec; when that folder cannot be written, into the run folder instead.

    Returns where the lock went and, when it is not beside the spec, a note saying so. The run
    (its log and summary) is kept either way, so the work is never lost to a read-only folder.
    """
    try:
        lockmod.write_lock(path, lock)
        return path, None
    except WriteError as exc:
        if not isinstance(log, RunLog):
            raise
        elsewhere = log.directory / path.name
        lockmod.write_lock(elsewhere, lock)
        return elsewhere, (f"{exc}; the lock was written to {elsewhere} instead: copy it beside the spec "
                           f"({path}) to use the learned prompts")
