"""MLflow tracking of training runs and sweeps (see :mod:`dlnflow.tracking`)."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dlnflow.experiments.aggregate import best_point
from dlnflow.lockfile.lock import public_identity
from dlnflow.report.html import render_run_html, render_sweep_html, sweep_view_of
from dlnflow.spec.pipeline import Pipeline
from dlnflow.tracking.settings import TrackingSettings
from dlnflow.training.runs import SUMMARY, read_log

PARAM_LIMIT = 500
"""Longest parameter value logged (MLflow allows more; long values are prompts, kept as artifacts)."""

Warn = Callable[[str], None]


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside an SQLite store (MLflow's default would be
    ``./mlruns`` under the current folder); other stores decide for themselves (``None``).

    >>> artifact_location("sqlite:////tmp/runs/mlflow.db")
    'file:///tmp/runs/mlartifacts'
    >>> artifact_location("http://127.0.0.1:5000") is None
    True
    """
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).resolve().parent.joinpath("mlartifacts").as_uri()


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), sub, out)
        return
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    out[prefix] = text if len(text) <= PARAM_LIMIT else text[: PARAM_LIMIT - 1] + "…"


def run_params(pipeline: Pipeline, identities: dict[str, Any], overrides: dict[str, Any] | None = None,
               ) -> dict[str, str]:
    """The parameters of one run, flattened to ``dotted.name -> text``."""
    data = {k: v for k, v in asdict(pipeline.data).items() if k != "path"}
    out: dict[str, str] = {}
    _flat("", {"spec": {"name": pipeline.name, "file": pipeline.spec_path.name, "loss": pipeline.loss,
                        "layers": [la.name for la in pipeline.graph]},
               "data": data, "train": pipeline.train.hyperparameters(), "seed": pipeline.train.seed,
               "model": {k: public_identity(v) for k, v in identities.items()}}, out)
    if overrides:
        _flat("override", {k.replace(".", "_"): v for k, v in overrides.items()}, out)
    return out


def step_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The metrics of one log record (logged with ``step = record["iteration"]``).

    >>> step_metrics({"iteration": 2, "batch_accuracy": 0.5, "dev": 0.75,
    ...               "usage": {"backend_calls": 30, "cache_hits": 10, "prompt_tokens": 900,
    ...                         "completion_tokens": 20}})
    {'batch_accuracy': 0.5, 'dev_accuracy': 0.75, 'calls': 30.0, 'tokens': 920.0, 'cache_hit_rate': 0.25}
    """
    out: dict[str, float] = {}
    if isinstance(record.get("batch_accuracy"), int | float):
        out["batch_accuracy"] = float(record["batch_accuracy"])
    if isinstance(record.get("dev"), int | float):
        out["dev_accuracy"] = float(record["dev"])
    usage = record.get("usage")
    if isinstance(usage, dict):
        calls, hits = int(usage.get("backend_calls", 0)), int(usage.get("cache_hits", 0))
        out["calls"] = float(calls)
        out["tokens"] = float(int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0)))
        out["cache_hit_rate"] = hits / (calls + hits) if calls + hits else 0.0
    return out


class _Store:
    """One MLflow client for a command, and the single warning when tracking fails."""

    def __init__(self, settings: TrackingSettings, warn: Warn):
        self.settings = settings
        self.warn = warn
        self.broken = False
        self._client: Any = None
        self._experiment: str | None = None

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Run a tracking step; on the first failure warn once and stop tracking (callers check
        ``broken`` before starting a step; a failure after that is swallowed without a second warning)."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - tracking must never fail training
            if self.broken:
                return
            self.broken = True
            self.warn(f"MLflow tracking stopped ({what} failed: {type(exc).__name__}: {exc}); "
                      f"training goes on untracked. Tracking URI: {self.settings.uri}")

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                from mlflow.tracking import MlflowClient
            except ImportError as exc:
                raise RuntimeError("mlflow is not installed; pip install 'dlnflow[mlflow]'") from exc
            self._client = MlflowClient(tracking_uri=self.settings.uri)
        return self._client

    def experiment_id(self) -> str:
        if self._experiment is None:
            found = self.client.get_experiment_by_name(self.settings.experiment)
            self._experiment = (found.experiment_id if found is not None else self.client.create_experiment(
                self.settings.experiment, artifact_location=artifact_location(self.settings.uri)))
        return self._experiment

    def start(self, name: str, params: dict[str, str], parent: str | None = None, kind: str = "run") -> str:
        tags = {"mlflow.source.name": "dlnflow", "dlnflow.kind": kind}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id(), run_name=name, tags=tags)
        run_id = str(run.info.run_id)
        self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_files(self, run_id: str, paths: list[Path]) -> None:
        for path in paths:
            if path.is_file():
                self.client.log_artifact(run_id, str(path))

    def log_text(self, run_id: str, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            self.client.log_artifact(run_id, str(path))

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)


class MlflowRun:
    """One training run as an MLflow run (a :class:`RunTracker`)."""

    def __init__(self, store: _Store, name: str, params: dict[str, str], parent: str | None = None):
        self.store = store
        self.run_id: str | None = None
        if not store.broken:
            with store.guard("starting the run"):
                self.run_id = store.start(name, params, parent)

    def _ok(self) -> bool:
        return self.run_id is not None and not self.store.broken

    def record(self, record: dict[str, Any]) -> None:
        if self._ok():
            with self.store.guard("logging metrics"):
                self.store.log_metrics(str(self.run_id), step_metrics(record), int(record.get("iteration", 0)))

    def finished(self, summary: dict[str, Any], run_dir: Path, lock: Path | None) -> None:
        if not self._ok():
            return
        run_id = str(self.run_id)
        with self.store.guard("logging the results"):
            metrics = {f"final_{k}": float(v) for k, v in (summary.get("metrics") or {}).items()}
            self.store.log_metrics(run_id, metrics, int(summary.get("iterations_run", 0)))
            self.store.log_files(run_id, [run_dir / "log.jsonl", run_dir / "summary.json"]
                                 + ([lock] if lock is not None else []))
            self.store.log_text(run_id, render_run_html(run_dir), "report.html")
            self.store.end(run_id, "FINISHED")

    def replay(self, run_dir: Path) -> None:
        """Log a run that finished earlier from its folder: every record, then the summary."""
        if not self._ok():
            return
        for record in read_log(run_dir):
            self.record(record)
        path = run_dir / SUMMARY
        if path.is_file():
            with self.store.guard("reading the run's summary"):
                summary = json.loads(path.read_text(encoding="utf-8"))
            self.finished(summary, run_dir, None)

    def failed(self, why: str, run_dir: Path) -> None:
        if self._ok():
            run_id = str(self.run_id)
            with self.store.guard("logging the failure"):
                self.store.client.set_tag(run_id, "dlnflow.failure", why[:PARAM_LIMIT])
                self.store.log_files(run_id, [run_dir / "log.jsonl.partial"])
                self.store.end(run_id, "FAILED")


def _default_warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def run_tracker(settings: TrackingSettings | None, pipeline: Pipeline, identities: dict[str, Any],
                name: str, warn: Warn = _default_warn) -> MlflowRun | None:
    """A tracker for one training run (``None`` when tracking is off)."""
    if settings is None:
        return None
    store = _Store(settings, warn)
    params: dict[str, str] = {}
    with store.guard("collecting the run's parameters"):
        params = run_params(pipeline, identities)
    return MlflowRun(store, name, params)


class SweepTracking:
    """A sweep (:class:`dlnflow.sweep.Sweep`) as a parent MLflow run with one child run per seed x setting."""

    def __init__(self, settings: TrackingSettings, sweep: Any, warn: Warn = _default_warn):
        self.store = _Store(settings, warn)
        self.sweep = sweep
        self.parent: str | None = None
        base = sweep.base
        params: dict[str, str] = {}
        _flat("", {"spec": {"name": base.name, "file": base.spec_path.name}, "sweep": sweep.matrix.as_dict()},
              params)
        with self.store.guard("starting the sweep's run"):
            self.parent = self.store.start(f"sweep {base.name}", params, kind="sweep")

    def child(self, state: Any) -> MlflowRun | None:
        """The tracker of one run of the sweep (a :class:`~dlnflow.sweep.RunState`); ``None`` once
        tracking has failed. A finished run's model identities come from its summary (no model is loaded)."""
        if self.parent is None or self.store.broken:
            return None
        params: dict[str, str] = {}
        with self.store.guard("collecting a run's parameters"):
            config = (state.summary or {}).get("config") or {}
            identities = config.get("identities") or state.net.identities()
            params = run_params(state.net.pipeline, identities, state.point.overrides)
        return MlflowRun(self.store, f"{self.sweep.base.name} {state.run_dir.name}", params, parent=self.parent)

    def finished(self, lock: Path | None) -> None:
        """Close the parent run: the best point's mean metrics, the lock and the sweep's HTML report."""
        if self.parent is None or self.store.broken:
            return
        with self.store.guard("logging the sweep's results"):
            points = self.sweep.points()
            best = best_point(points)
            if best is not None:
                means = {f"best_mean_{k}": v.mean for k, v in points[best].metrics.items()}
                self.store.log_metrics(self.parent, means, 0)
            self.store.log_files(self.parent, [lock] if lock is not None else [])
            self.store.log_text(self.parent, self._html(), "report.html")
            self.store.end(self.parent, "FINISHED")

    def _html(self) -> str:
        base = self.sweep.base
        runs = [(s.point, s.run_dir) for s in self.sweep.states]
        return render_sweep_html(sweep_view_of(base.name, base.spec_path.name, runs))

    def failed(self, why: str) -> None:
        if self.parent is not None and not self.store.broken:
            with self.store.guard("logging the sweep's failure"):
                self.store.client.set_tag(self.parent, "dlnflow.failure", why[:PARAM_LIMIT])
                self.store.end(self.parent, "FAILED")
