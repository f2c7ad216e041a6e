"""A 4-run sweep of the quickstart on a real two-node Ray cluster (127.0.0.x) against the same sweep
run sequentially, on the real embedded model (markers ``ray`` and ``real``).

The Ray sweep starts from an empty cache, with a ``file://`` remote shared by its workers. While
it runs, one worker process that is training a run is killed (SIGKILL): Ray retries that run,
which replays what the dead worker had paid for from the cache; every run must be there exactly
once. Then the sequential sweep, in another project with an empty local cache and the same
remote, must make zero backend calls (the workers shared every call) and give the same lock
bytes, the same per-run metrics and the same ``dlnflow results`` table: the Ray path (run
folders adopted from workers, best run, lock) computes what the sequential path computes from the
same model answers. (That two cold caches give identical answers is the embedded model's
determinism, checked by ``benchmarks/scale_out.py``, which runs each way from an empty cache.)
One training iteration per run keeps the test to a few minutes on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from paths import ROOT
from ray_cluster import RayCluster

SWEEP = ["--seeds", "1,2", "--set", "train.prompt_candidates=2,3", "--set", "train.iterations=1"]
TIMEOUT = 2400.0

pytestmark = [pytest.mark.ray, pytest.mark.real]


def project(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name / "pipelines"
    folder.mkdir(parents=True)
    (tmp_path / name / "pyproject.toml").write_text("[project]\nname = 'demo'\n")  # runs/ and cache/ go here
    return Path(shutil.copy(ROOT / "pipelines" / "quickstart.yaml", folder / "quickstart.yaml"))


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("DLNFLOW_", "RAY_ADDRESS"))}
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return out


def dlnflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "dlnflow", *args]


def finish(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out), err


def results_table(spec: Path) -> str:
    proc = subprocess.run(dlnflow("results", str(spec)), env=env(), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def kill_one_training_worker(cluster: RayCluster, shared: Path, proc: subprocess.Popen[str]) -> int:
    """SIGKILL a Ray worker while it trains a run (calls have reached the shared cache); returns its PID."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before a worker could be killed"
        paid = sum(1 for _ in shared.glob("??/??/*.json")) if shared.is_dir() else 0
        pids = cluster.task_processes("train_job")
        if paid >= 20 and pids:
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.2)
    raise AssertionError("no worker was seen training")


def test_ray_sweep_matches_the_sequential_sweep_and_survives_a_killed_worker(
        ray_cluster: RayCluster, tmp_path: Path) -> None:
    seq_spec = project(tmp_path, "sequential")
    ray_spec = project(tmp_path, "ray")
    remote = f"file://{tmp_path / 'shared-cache'}"
    on_ray = subprocess.Popen(dlnflow("--json", "--cache-remote", remote, "train", str(ray_spec), *SWEEP,
                                      "--executor", "ray", "--address", ray_cluster.address),
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = kill_one_training_worker(ray_cluster, tmp_path / "shared-cache", on_ray)
    got, got_err = finish(on_ray)

    sequential = subprocess.Popen(dlnflow("--json", "--cache-remote", remote, "train", str(seq_spec), *SWEEP),
                                  env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seq, seq_err = finish(sequential)
    assert got["backend_calls"] > 0
    assert seq["backend_calls"] == 0, f"ray stderr:\n{got_err[-3000:]}\nsequential stderr:\n{seq_err[-3000:]}"

    assert len(got["runs"]) == len(seq["runs"]) == 4
    workers = [r["worker"] for r in got["runs"]]
    assert all(w and not w.endswith(f":{killed}") for w in workers)  # the killed run was redone elsewhere
    assert len({r["run_dir"] for r in got["runs"]}) == 4
    assert [Path(r["run_dir"]).name for r in got["runs"]] == [Path(r["run_dir"]).name for r in seq["runs"]]
    assert [r["metrics"] for r in got["runs"]] == [r["metrics"] for r in seq["runs"]]
    assert got["points"] == seq["points"] and got["best"] == seq["best"]
    summaries = sorted((tmp_path / "ray" / "runs").rglob("summary.json"))
    assert len(summaries) == 4 and not list((tmp_path / "ray" / "runs").rglob("log.jsonl.partial"))
    lock = ray_spec.with_name("quickstart.lock.yaml").read_bytes()
    assert lock == seq_spec.with_name("quickstart.lock.yaml").read_bytes()
    assert results_table(ray_spec) == results_table(seq_spec)
