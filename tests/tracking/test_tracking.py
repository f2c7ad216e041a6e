"""MLflow tracking, read back through MLflow's own client from a local SQLite store.

The quickstart run (real model, one iteration, see ``quickstart_run.py``) and a 2-seed sweep of it
are logged; the tests read params, metric history per step, artifacts and parent/child links.
A store that cannot be written leaves training as it would have been, with one warning.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import write_spec
from quickstart_run import QuickstartRun
from standin import StandIn

from dlnflow.cli import cli
from dlnflow.spec.compiler import compile_spec
from dlnflow.tracking.settings import tracking_settings

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install -e '.[mlflow]')")


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def history(c: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in c.get_metric_history(run_id, key))


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def artifacts(c: Any, run_id: str) -> set[str]:
    return {a.path for a in c.list_artifacts(run_id)}


def check_run(c: Any, run_id: str, run_dir: Path, seed: int) -> None:
    """One run in the store says what its run folder says."""
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["seed"] == str(seed) and p["train.seed"] == str(seed)
    assert p["train.iterations"] == "1" and p["train.method"] == "dln1"
    assert p["spec.name"] == "quickstart" and p["model.local.backend"] == "llamacpp"
    log = records(run_dir)
    devs = [(r["iteration"], r["dev"]) for r in log if "dev" in r]
    assert history(c, run_id, "dev_accuracy") == devs and [s for s, _ in devs] == [0, 1]
    assert history(c, run_id, "batch_accuracy") == [(1, log[-1]["batch_accuracy"])]
    calls = history(c, run_id, "calls")
    assert calls == [(r["iteration"], r["usage"]["backend_calls"]) for r in log]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert history(c, run_id, "final_test") == [(1, summary["metrics"]["test"])]
    assert {"log.jsonl", "summary.json", "report.html"} <= artifacts(c, run_id)
    logged = Path(c.download_artifacts(run_id, "log.jsonl", str(run_dir.parent.parent / f"dl-{run_id}")))
    assert logged.read_bytes() == (run_dir / "log.jsonl").read_bytes()


@pytest.mark.real
def test_quickstart_run_in_mlflow(quickstart_run: QuickstartRun) -> None:
    tracking = quickstart_run.payload["tracking"]
    assert tracking["warnings"] == [] and tracking["uri"] == quickstart_run.tracking_uri
    c = client(quickstart_run.tracking_uri)
    run_id = tracking["run_id"]
    check_run(c, run_id, quickstart_run.run_dir, 42)
    assert "quickstart.lock.yaml" in artifacts(c, run_id)
    run = c.get_run(run_id)
    assert run.info.run_name == f"quickstart {quickstart_run.run_dir.name}"
    assert c.get_experiment(run.info.experiment_id).name == "quickstart"
    hits = history(c, run_id, "cache_hit_rate")
    assert [s for s, _ in hits] == [0, 1] and all(0 <= v <= 1 for _, v in hits)
    assert "mlflow.parentRunId" not in run.data.tags
    artifact_dir = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifact_dir.is_relative_to(quickstart_run.folder)  # beside the store, not under the cwd


@pytest.mark.real
def test_two_seed_sweep_is_a_parent_with_children(quickstart_run: QuickstartRun, tmp_path: Path) -> None:
    spec = tmp_path / "quickstart.yaml"
    shutil.copyfile(quickstart_run.spec, spec)
    result = CliRunner().invoke(cli, ["train", str(spec), "--seeds", "42,7", "--iterations", "1", "--track", "mlflow",
                                      "--json"], env=quickstart_run.env)  # same runs folder and cache
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [(r["seed"], r["skipped"]) for r in out["runs"]] == [(42, True), (7, False)]
    c = client(quickstart_run.tracking_uri)
    parent = c.get_run(out["tracking"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["dlnflow.kind"] == "sweep"
    assert json.loads(parent.data.params["sweep.seeds"]) == [42, 7]
    assert {"report.html", "quickstart.lock.yaml"} <= artifacts(c, parent.info.run_id)
    children = c.search_runs([parent.info.experiment_id],
                             filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_seed = {int(r.data.params["seed"]): r for r in children}
    assert sorted(by_seed) == [7, 42]
    for row in out["runs"]:
        check_run(c, by_seed[row["seed"]].info.run_id, Path(row["run_dir"]), row["seed"])
    devs = [r["metrics"]["dev"] for r in out["runs"]]
    assert history(c, parent.info.run_id, "best_mean_dev") == [(0, pytest.approx(sum(devs) / 2))]


def test_a_broken_store_changes_nothing_but_warns_once(standin: StandIn, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    plain, tracked = tmp_path / "plain", tmp_path / "tracked"
    outputs = []
    for folder in (plain, tracked):
        folder.mkdir()
        spec = write_spec(folder)
        if folder == tracked:
            (folder / "blocker").write_text("a file where the store's folder should be\n")
            spec.write_text(spec.read_text() + "tracking: {backend: mlflow, uri: blocker/store.db}\n")
        monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(folder / "runs"))
        result = CliRunner().invoke(cli, ["train", str(spec)])
        assert result.exit_code == 0, result.output
        outputs.append(result)
    assert (plain / "tiny.lock.yaml").read_bytes() == (tracked / "tiny.lock.yaml").read_bytes()
    warnings = [line for line in outputs[1].stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "MLflow tracking stopped" in warnings[0], outputs[1].stderr
    assert "training goes on untracked" in warnings[0]
    assert not any(line.startswith("warning:") for line in outputs[0].stderr.splitlines())


def test_where_tracking_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DLNFLOW_TRACKING_URI", raising=False)
    spec = write_spec(tmp_path)
    assert tracking_settings(compile_spec(spec)) is None
    on = tracking_settings(compile_spec(spec), "mlflow")
    assert on is not None and on.experiment == "tiny" and on.uri.startswith("sqlite:///") and on.uri.endswith(
        "/mlflow.db")
    spec.write_text(spec.read_text() + "tracking: {backend: mlflow, uri: store.db, experiment: colours}\n")
    from_spec = tracking_settings(compile_spec(spec))
    assert from_spec is not None
    assert (from_spec.uri, from_spec.experiment) == (f"sqlite:///{tmp_path.resolve() / 'store.db'}", "colours")
    assert tracking_settings(compile_spec(spec), "none") is None
    monkeypatch.setenv("DLNFLOW_TRACKING_URI", "sqlite:////elsewhere/m.db")
    env = tracking_settings(compile_spec(spec))
    assert env is not None and env.uri == "sqlite:////elsewhere/m.db"


def test_mlflow_is_imported_only_when_tracking() -> None:
    modules = "dlnflow.cli.train, dlnflow.api.training, dlnflow.tracking.mlflow_tracker, dlnflow.report.html"
    code = f"import sys, {modules}; sys.exit('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


class FailingClient:
    """An MLflow client whose every call fails, as a store that went away would."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise OSError(f"store unreachable ({name})")

        return fail


@pytest.mark.parametrize("fails_at", ["start", "record"])
def test_one_warning_however_many_steps_fail(tmp_path: Path, fails_at: str) -> None:
    from dlnflow.tracking.mlflow_tracker import MlflowRun, TrackingSettings, _Store

    warnings: list[str] = []
    store = _Store(TrackingSettings("mlflow", "sqlite:///unused.db", "x"), warnings.append)
    failing = FailingClient()
    if fails_at == "start":
        store._client = failing
    else:
        store.start = lambda *args, **kwargs: "run-1"  # type: ignore[method-assign]
        store._client = failing
    run = MlflowRun(store, "name", {"a": "1"})
    for it in range(3):
        run.record({"iteration": it, "dev": 0.5, "usage": {"backend_calls": it}})
    run.finished({"metrics": {"dev": 0.5}, "iterations_run": 2}, tmp_path, None)
    run.failed("late", tmp_path)
    assert len(warnings) == 1 and "store unreachable" in warnings[0]
    assert failing.calls == 1  # nothing was tried after the first failure
