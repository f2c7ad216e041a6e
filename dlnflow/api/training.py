"""Training from the Python API: one run or a sweep, budgets, dry runs and aggregated results.

These are the functions ``dlnflow train`` and ``dlnflow results`` call; the command line only
parses its options into a :class:`TrainOptions` and renders what comes back.

>>> import dlnflow                                                        # doctest: +SKIP
>>> options = dlnflow.TrainOptions(seeds=(1, 2), sets=("train.prompt_candidates=3,4",))  # doctest: +SKIP
>>> dlnflow.plan("pipelines/quickstart.yaml", options).payload["new"]   # doctest: +SKIP
>>> outcome = dlnflow.train("pipelines/quickstart.yaml", options)       # doctest: +SKIP
>>> print(dlnflow.results("pipelines/quickstart.yaml", options).table)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnflow.core.errors import InputError
from dlnflow.experiments.aggregate import best_point, markdown_table
from dlnflow.experiments.executors import check_executor, run_sweep
from dlnflow.experiments.matrix import Matrix, matrix_for, parse_seeds, parse_set
from dlnflow.experiments.sweep import Listener, RunState, Sweep
from dlnflow.lockfile.lock import read_lock, sweep_section
from dlnflow.planning.dryrun import plan_network
from dlnflow.planning.sweep import plan_sweep, predict_run
from dlnflow.runtime.cache import default_cache_dir
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.overrides import point_label
from dlnflow.spec.pipeline import Pipeline
from dlnflow.spec.settings import BudgetSettings
from dlnflow.tracking.mlflow_tracker import SweepTracking, run_tracker
from dlnflow.tracking.settings import TrackingSettings, tracking_settings
from dlnflow.training.trainer import Progress, Trainer

USAGE_KEYS = ("backend_calls", "cache_hits", "prompt_tokens", "completion_tokens")
Info = Callable[[str], None]


@dataclass(frozen=True)
class TrainOptions:
    """What a user may change for one command, on top of the spec.

    ``seed`` replaces ``train.seed`` (or, in a spec with ``experiments.seeds``, the seeds);
    ``seeds`` makes a sweep over seeds; ``sets`` are ``SETTING=V[,V...]`` texts as given to
    ``--set`` (several values make a grid); ``iterations`` replaces ``train.iterations``;
    ``max_calls``/``max_tokens`` replace the spec's budget for the whole command; ``track``
    (``mlflow`` or ``none``) replaces the spec's ``tracking`` section (see :mod:`dlnflow.tracking`).
    ``executor`` (``local`` or ``ray``), ``jobs`` and ``address`` say where a sweep's runs train
    (default: the spec's ``experiments`` section; see :mod:`dlnflow.experiments.executors`).
    """

    seed: int | None = None
    seeds: Sequence[int] | str | None = None
    sets: Sequence[str] = ()
    iterations: int | None = None
    max_calls: int | None = None
    max_tokens: int | None = None
    executor: str | None = None
    jobs: int | None = None
    address: str | None = None
    track: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What a training, planning or results call returns: plain data, and a table for people."""

    payload: dict[str, Any]
    table: str = ""
    notes: list[str] = field(default_factory=list)


# -- the sweep a command describes ---------------------------------------------------------------
def _seeds(options: TrainOptions) -> tuple[int, ...] | None:
    if options.seeds is None or options.seeds == "":
        return None
    if isinstance(options.seeds, str):
        return parse_seeds(options.seeds)
    return tuple(int(s) for s in options.seeds)


def _seeds_text(options: TrainOptions) -> str:
    seeds = options.seeds
    return seeds if isinstance(seeds, str) else ",".join(str(s) for s in seeds or ())


def describe_sweep(base: Pipeline, options: TrainOptions) -> tuple[Matrix, bool]:
    """The matrix of runs ``options`` ask for on ``base``, and whether that is a sweep."""
    if options.seed is not None and options.seeds:
        raise InputError("--seed and --seeds exclude each other")
    chosen = _seeds(options)
    settings = [parse_set(text) for text in options.sets]
    if options.seed is not None:
        if base.experiments.seeds:
            chosen = (options.seed,)
        else:
            settings.insert(0, ("train.seed", [options.seed]))
    if options.iterations is not None:
        settings.insert(0, ("train.iterations", [options.iterations]))
    return matrix_for(base, chosen, settings)


def budget_for(base: Pipeline, options: TrainOptions) -> BudgetSettings:
    """The command's budget: the options' limits where given, else the spec's."""
    spec = base.train.budget
    return BudgetSettings(options.max_calls if options.max_calls is not None else spec.max_calls,
                          options.max_tokens if options.max_tokens is not None else spec.max_tokens)


def open_sweep(spec: str | Path, options: TrainOptions = TrainOptions(), cache_dir: str | Path | None = None,
               cache_mode: str = "use", cache_remote: str | None = None) -> tuple[Sweep, bool]:
    """Compile ``spec`` and lay out the runs ``options`` ask for (nothing is trained yet).

    ``cache_remote`` is the shared cache tier (default ``$DLNFLOW_CACHE_REMOTE``; ``""`` for none).
    """
    path = Path(spec)
    base = compile_spec(path)
    matrix, is_sweep = describe_sweep(base, options)
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(path.parent)
    return Sweep(base, matrix, folder, cache_mode, predict=predict_run, cache_remote=cache_remote), is_sweep


def where_runs_go(base: Pipeline, options: TrainOptions, is_sweep: bool) -> tuple[str, int, str | None]:
    """``(executor, jobs, address)`` from ``options``, else the spec's ``experiments`` section; refuses
    combinations that cannot work (exit 2)."""
    if (options.executor == "ray" or (options.jobs or 1) > 1) and not is_sweep:
        raise InputError("--executor ray and --jobs spread the runs of a sweep; give --seeds or --set with "
                         "several values (or an experiments section)")
    executor = options.executor or base.experiments.executor
    jobs = options.jobs or base.experiments.jobs
    address = options.address or base.experiments.address
    budget_given = is_sweep and (options.max_calls is not None or options.max_tokens is not None)
    check_executor(executor, jobs, options.address if executor != "ray" else address, budget_given)
    return executor, jobs, address


# -- dry run ----------------------------------------------------------------------------------------
def plan(spec: str | Path, options: TrainOptions = TrainOptions(), cache_dir: str | Path | None = None,
         cache_mode: str = "use") -> Outcome:
    """Predict the calls and tokens ``train`` would need (cached vs new) without calling a model."""
    sweep, is_sweep = open_sweep(spec, options, cache_dir, cache_mode)
    budget = budget_for(sweep.base, options)
    if not is_sweep:  # a single run is always trained (replayed), never skipped
        for s in sweep.states:
            s.summary = None
    predicted = plan_sweep(sweep)
    payload = predicted.as_dict()
    new = payload["new"]
    warnings = []
    if budget.max_calls is not None and new["calls"] > budget.max_calls:
        warnings.append(f"the budget of {budget.max_calls} calls is below the {new['calls']} predicted: "
                        "training would stop early (rerun with a higher budget to continue)")
    tokens = new["prompt_tokens"] + new["completion_tokens"]
    if budget.max_tokens is not None and tokens > budget.max_tokens:
        warnings.append(f"the budget of {budget.max_tokens} tokens is below the {tokens} predicted")
    payload["warnings"] = warnings
    return Outcome(payload, predicted.text(), warnings)


# -- training ----------------------------------------------------------------------------------------
def train(spec: str | Path, options: TrainOptions = TrainOptions(), cache_dir: str | Path | None = None,
          cache_mode: str = "use", progress: Progress | None = None, info: Info | None = None,
          warn: Info | None = None, cache_remote: str | None = None) -> Outcome:
    """Train ``spec`` as ``options`` say: one run, or a sweep over seeds and settings.

    Writes the spec's lock file. ``progress`` hears the trainer's events, ``info`` one line per
    step worth telling a person (which run starts, what it reached), ``warn`` a tracking failure
    (also kept in the payload's ``tracking.warnings``). A sweep's runs train where ``options``
    (or the spec's ``experiments``) say: in order here, in ``jobs`` processes, or on Ray;
    ``cache_remote`` is the shared cache tier (default ``$DLNFLOW_CACHE_REMOTE``).
    """
    sweep, is_sweep = open_sweep(spec, options, cache_dir, cache_mode, cache_remote)
    budget = budget_for(sweep.base, options)
    where = where_runs_go(sweep.base, options, is_sweep)
    tell = info or (lambda line: None)
    notes = TrackingNotes(tracking_settings(sweep.base, options.track), warn)
    if notes.settings is not None:
        tell(f"tracking to MLflow at {notes.settings.uri}, experiment {notes.settings.experiment!r}")
    if is_sweep:
        return _train_sweep(Path(spec), sweep, budget, progress, tell, notes, where)
    return _train_one(Path(spec), sweep, budget, progress, tell, notes)


class TrackingNotes:
    """The command's tracking settings and the warnings tracking gave (shown, and kept for the payload)."""

    def __init__(self, settings: TrackingSettings | None, warn: Info | None):
        self.settings = settings
        self.warn = warn
        self.warnings: list[str] = []

    def __call__(self, message: str) -> None:
        self.warnings.append(message)
        if self.warn is not None:
            self.warn(message)

    def payload(self, run_id: str | None) -> dict[str, Any]:
        assert self.settings is not None
        return {"backend": self.settings.backend, "uri": self.settings.uri, "experiment": self.settings.experiment,
                "run_id": run_id, "warnings": self.warnings}


def _train_one(spec: Path, sweep: Sweep, budget: BudgetSettings, progress: Progress | None,
               tell: Info, notes: TrackingNotes) -> Outcome:
    s = sweep.states[0]
    net = s.net
    with net:
        if budget != net.pipeline.train.budget:
            net.override(budget=budget)
        t = net.pipeline.train
        tell(f"training {spec} with {t.method}: {t.iterations} iterations, seed {t.seed}, "
             f"cache {net.cache_dir if net.cache_mode != 'off' else 'off'}")
        predicted = plan_network(net)
        tell(f"predicted: {predicted.new_calls} new backend calls, {predicted.cached_calls} cached"
             + ("" if predicted.exact else " (estimate)"))
        overrides = s.point.fixed or None
        tracker = run_tracker(notes.settings, net.pipeline, net.identities(), f"{net.pipeline.name} {s.run_dir.name}",
                              warn=notes) if notes.settings is not None else None
        result = Trainer(net, progress=progress, run_dir=s.run_dir if overrides else None,
                         prediction=predicted.predicted(), overrides=overrides, tracker=tracker).fit()
        payload = result.as_dict()
        if tracker is not None:
            payload["tracking"] = notes.payload(tracker.run_id)
        return Outcome(payload)


def _run_row(s: RunState) -> dict[str, Any]:
    summary = s.summary or {}
    spent = {k: 0 if s.skipped else int(summary.get(k, 0)) for k in USAGE_KEYS}
    return {"seed": s.point.seed, "settings": s.point.settings, "run_dir": str(s.run_dir),
            "skipped": s.skipped, "worker": s.worker or None, "metrics": summary.get("metrics"), **spent,
            "predicted": None if s.skipped else summary.get("predicted"),
            "timing": None if s.skipped else summary.get("timing")}


def _announcer(sweep: Sweep, tell: Info) -> Listener:
    n = len(sweep.states)

    def listen(event: dict[str, Any]) -> None:
        s = event["run"]
        where = f"run {s.index + 1}/{n} ({s.point.label})"
        if event["event"] == "skip":
            tell(f"{where}: finished earlier, skipped")
        elif event["event"] == "start":
            tell(f"{where}: training")
        else:
            m = s.summary["metrics"]
            tell(f"{where}: dev {100 * m['dev_before']:.1f}% -> {100 * m['dev']:.1f}%, "
                 f"test {100 * m['test']:.1f}%, {s.summary['backend_calls']} backend calls")

    return listen


def _train_sweep(spec: Path, sweep: Sweep, budget: BudgetSettings, progress: Progress | None,
                 tell: Info, notes: TrackingNotes,
                 where: tuple[str, int, str | None] = ("local", 1, None)) -> Outcome:
    started = time.monotonic()
    tell(f"sweep of {spec}: {len(sweep.states)} run(s) ({len(sweep.matrix.seeds)} seed(s) x "
         f"{len(sweep.matrix.points())} setting(s)), {len(sweep.pending)} to train")
    executor, jobs, address = where
    parallel = not (executor == "local" and jobs == 1)
    if parallel and notes.settings is not None:
        notes("tracking logs sweeps that run in this process only; the runs on --jobs / Ray are not logged")
    parent = SweepTracking(notes.settings, sweep, warn=notes) if notes.settings is not None and not parallel else None
    try:
        if parallel:
            tell(f"executor: {executor}" + (f", {jobs} processes" if executor == "local" else
                                            f", cluster {address or 'from $RAY_ADDRESS or started here'}"))
            run_sweep(sweep, executor, jobs, address, listen=_announcer(sweep, tell))
        else:
            sweep.run(budget, progress=progress, listen=_announcer(sweep, tell),
                      track=parent.child if parent else None)
    except BaseException as exc:
        if parent is not None:
            parent.failed(f"{type(exc).__name__}: {exc}")
        raise
    lock = sweep.write_lock()
    if parent is not None:
        parent.finished(lock)
    rows = [_run_row(s) for s in sweep.states]
    totals = {k: sum(r[k] for r in rows) for k in USAGE_KEYS}
    predicted = {k: sum((r["predicted"] or {}).get(k, 0) for r in rows) for k in USAGE_KEYS}
    best = sweep.best()
    points = sweep.points()
    payload = {
        "sweep": True, **totals, "wall_seconds": round(time.monotonic() - started, 3),
        "metrics": best[1].summary["metrics"] if best and best[1].summary else {},
        "lock": str(lock) if lock else None, "predicted": predicted, "runs": rows,
        "points": [p.as_dict() for p in points], "best": sweep.summary().get("best"),
    }
    if parent is not None:
        payload["tracking"] = notes.payload(parent.parent)
    notes = []
    if best is not None:
        notes.append(f"best: {point_label(best[1].point.settings)} (seed {best[1].point.seed}), "
                     f"run {best[1].run_dir}")
    return Outcome(payload, markdown_table(points, point_label), notes)


# -- results ---------------------------------------------------------------------------------------
def results(spec: str | Path, options: TrainOptions = TrainOptions(), confidence: float = 0.95,
            cache_dir: str | Path | None = None, cache_mode: str = "use") -> Outcome:
    """Mean, standard deviation and a t interval over seeds, per grid point, of a sweep's finished runs.

    Without seeds or settings in ``options``, the sweep recorded in the lock file is read (else the
    spec's single run). Calls no model; raises :class:`InputError` when no run has finished.
    """
    path = Path(spec)
    sweep, is_sweep = open_sweep(path, options, cache_dir, cache_mode)
    recorded = sweep_section(read_lock(sweep.base.lock_path))
    if not is_sweep and recorded is not None and recorded.get("seeds"):
        matrix = Matrix(tuple(recorded["seeds"]), dict(recorded.get("grid") or {}),
                        dict(recorded.get("fixed") or {}))
        sweep = Sweep(sweep.base, matrix, sweep.cache_dir, cache_mode)
    points = sweep.points(confidence)
    if not any(p.seeds for p in points):
        raise InputError(f"{path} has no finished run for these settings yet ({len(sweep.states)} expected); "
                         f"train first: dlnflow train {path}" + "".join(f" --set {s}" for s in options.sets)
                         + (f" --seeds {_seeds_text(options)}" if options.seeds else ""))
    best = best_point(points)
    runs: list[dict[str, Any]] = [
        {"seed": s.point.seed, "settings": s.point.settings, "run_dir": str(s.run_dir),
         "finished": s.summary is not None, "metrics": s.metrics} for s in sweep.states]
    payload = {"spec": str(path), "confidence": confidence, "points": [p.as_dict() for p in points],
               "best": None if best is None else {"point": best, "settings": points[best].settings},
               "runs": runs, "missing": sum(1 for r in runs if not r["finished"])}
    notes = []
    if best is not None:
        notes.append(f"best by mean dev: {point_label(points[best].settings)}")
    if payload["missing"]:
        notes.append(f"{payload['missing']} run(s) not finished: run `dlnflow train` with the same options")
    return Outcome(payload, markdown_table(points, point_label), notes)
