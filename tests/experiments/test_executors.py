"""Where a sweep's runs go: options checked before anything runs, the spec's ``experiments`` keys,
and adopting a worker's run folder. (Runs in worker processes and on Ray: ``test_scale_out.py`` and
``test_sweep_ray.py``.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_spec
from standin import StandIn

from dlnflow.api.training import TrainOptions, open_sweep, where_runs_go
from dlnflow.cli import cli
from dlnflow.backends.llamacpp.backend import THREADS_ENV_VAR, default_threads
from dlnflow.core.errors import ConfigError
from dlnflow.experiments.executors import RunJob, RunOutcome, adopt, train_job, worker_threads


@pytest.mark.parametrize("args, message", [
    (["--jobs", "2"], "spread the runs of a sweep"),
    (["--executor", "ray"], "spread the runs of a sweep"),
    (["--seeds", "1,2", "--address", "1.2.3.4:6379"], "add --executor ray"),
    (["--seeds", "1,2", "--jobs", "2", "--max-calls", "10"], "needs the runs one after the other"),
])
def test_impossible_combinations_exit_2_before_training(standin: StandIn, tmp_path: Path,
                                                        args: list[str], message: str) -> None:
    spec = write_spec(tmp_path)
    res = CliRunner().invoke(cli, ["train", str(spec), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert sum(standin.calls.values()) == 0


def test_the_spec_names_the_executor_and_the_command_line_wins(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text() + "experiments:\n  seeds: [1, 2]\n  executor: ray\n  address: 10.0.0.5:6379\n"
                    "  jobs: 3\n")
    sweep, is_sweep = open_sweep(spec, TrainOptions(), tmp_path / "cache")
    assert is_sweep and where_runs_go(sweep.base, TrainOptions(), True) == ("ray", 3, "10.0.0.5:6379")
    assert where_runs_go(sweep.base, TrainOptions(executor="local", jobs=2), True) == ("local", 2, "10.0.0.5:6379")


def test_a_worker_run_folder_is_adopted_only_with_the_same_fingerprint(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    sweep, _ = open_sweep(spec, TrainOptions(seeds=(1, 2)), tmp_path / "cache")
    state = sweep.states[0]
    summary = {"config": {"fingerprint": state.fingerprint}, "metrics": {"dev": 0.5}}
    adopt(state, RunOutcome(0, {"summary.json": json.dumps(summary), "log.jsonl": "{}\n"}, False, "node", 7))
    assert json.loads((state.run_dir / "summary.json").read_text()) == summary
    assert state.summary == summary and state.worker == "node:7"
    other = sweep.states[1]
    with pytest.raises(Exception, match="another fingerprint"):
        adopt(other, RunOutcome(1, {"summary.json": json.dumps(summary)}, False))


def test_parallel_workers_share_the_cores_instead_of_each_taking_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV_VAR, "")  # restored (unset) after the test
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert worker_threads("local", 2) == 2
    assert worker_threads("local", 3) == 1
    assert worker_threads("local", 8) == 1
    assert worker_threads("ray", 1) == 1  # a Ray task reserves one CPU
    monkeypatch.setenv(THREADS_ENV_VAR, "3")  # the user's choice wins
    assert worker_threads("local", 2) == 3 and worker_threads("ray", 2) == 3
    monkeypatch.setenv(THREADS_ENV_VAR, "two")  # refused by the driver as by a single run
    with pytest.raises(ConfigError, match="DLNFLOW_THREADS"):
        worker_threads("local", 2)


def test_a_worker_sets_its_thread_share_for_the_embedded_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(THREADS_ENV_VAR, "")  # restored (unset) after the test
    spec = write_spec(tmp_path)
    sweep, _ = open_sweep(spec, TrainOptions(seeds=(1, 2)), tmp_path / "cache")
    state = sweep.states[0]
    state.run_dir.mkdir(parents=True)
    (state.run_dir / "summary.json").write_text(json.dumps({"config": {"fingerprint": state.fingerprint}}))
    job = RunJob(str(spec), sweep.matrix, 0, str(tmp_path / "cache"), sweep.cache_mode, "", threads=1)
    outcome = train_job(job)
    assert outcome.already_finished and os.environ[THREADS_ENV_VAR] == "1"
    assert default_threads() == 1
