"""Sweeps end to end: seeds x settings, skipping finished runs, the lock of the best run, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import write_spec
from paths import DRIVER
from standin import StandIn

from dlnflow.core.errors import BudgetExceeded
from dlnflow.experiments.matrix import matrix_for
from dlnflow.experiments.sweep import Sweep
from dlnflow.lockfile.lock import drift, read_lock
from dlnflow.planning.sweep import predict_run
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.settings import BudgetSettings
from dlnflow.training.network import Network

SWEEP_ARGS = ["--seeds", "1,2,3", "--set", "train.prompt_candidates=3,4"]


def make_sweep(spec: Path, cache: Path, seeds: tuple[int, ...] = (1, 2, 3)) -> Sweep:
    base = compile_spec(spec)
    matrix, is_sweep = matrix_for(base, seeds, [("train.prompt_candidates", [3, 4])])
    assert is_sweep
    return Sweep(base, matrix, cache, predict=predict_run)


def test_three_seeds_by_two_settings_end_to_end(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    events: list[str] = []
    sweep = make_sweep(spec, tmp_path / "cache")
    states = sweep.run(listen=lambda e: events.append(e["event"]))
    assert events == ["start", "done"] * 6
    assert len({s.run_dir for s in states}) == 6
    assert all((s.run_dir / "summary.json").exists() and (s.run_dir / "log.jsonl").exists() for s in states)
    calls = sum(s.summary["backend_calls"] for s in states)
    assert calls == sum(standin.calls.values()) > 0
    # every run recorded its prediction and its settings
    assert all(s.summary["predicted"]["backend_calls"] >= 0 for s in states)
    assert states[4].summary["config"]["overrides"] == {"train.prompt_candidates": 4, "train.seed": 2}
    # the lock holds the best run and the sweep summary
    lock_path = sweep.write_lock()
    lock = read_lock(lock_path)
    best_point, best = sweep.best()
    assert lock["sweep"]["seeds"] == [1, 2, 3]
    assert lock["sweep"]["best"]["run"] == best.run_dir.name
    assert lock["layers"]["answer"]["prompt"] == best.summary["prompts"]["answer.prompt"]
    assert lock["seed"] == best.point.seed and lock["train"]["prompt_candidates"] in (3, 4)
    means = [p["dev"]["mean"] for p in lock["sweep"]["points"]]
    assert means[best_point] == max(means)
    assert len(lock["sweep"]["points"]) == 2 and lock["sweep"]["points"][0]["seeds"] == [1, 2, 3]
    # the lock matches the spec: drift is computed with the best run's settings applied
    with Network(compile_spec(spec), cache_dir=tmp_path / "cache") as net:
        assert drift(net.pipeline, lock, net.identities(), net.dataset.digest) == []


def test_rerun_skips_everything_and_makes_no_calls(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    make_sweep(spec, tmp_path / "cache").run()
    first_lock = make_sweep(spec, tmp_path / "cache").write_lock().read_bytes()
    before = sum(standin.calls.values())
    again = make_sweep(spec, tmp_path / "cache")
    assert again.pending == []
    events: list[str] = []
    again.run(listen=lambda e: events.append(e["event"]))
    assert events == ["skip"] * 6
    assert sum(standin.calls.values()) == before
    assert again.write_lock().read_bytes() == first_lock


def test_a_changed_run_is_replayed_from_the_cache(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    sweep = make_sweep(spec, tmp_path / "cache")
    sweep.run()
    (sweep.states[2].run_dir / "summary.json").unlink()  # as if that run had been killed at the end
    before = sum(standin.calls.values())
    again = make_sweep(spec, tmp_path / "cache")
    assert [s.index for s in again.pending] == [2]
    again.run()
    assert sum(standin.calls.values()) == before  # replayed for free
    assert again.states[2].summary["metrics"] == sweep.states[2].summary["metrics"]


def test_budget_covers_the_whole_sweep(standin: StandIn, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "reference-runs"))
    make_sweep(spec, tmp_path / "reference-cache").run()
    uninterrupted = sum(standin.calls.values())
    standin.calls.clear()
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    sweep = make_sweep(spec, tmp_path / "cache")
    first_run_calls = 57  # measured: seed 1, 3 candidates, cold cache
    with pytest.raises(BudgetExceeded, match=r"sweep stopped in run 2/6 .* with 1 run\(s\) finished"):
        sweep.run(BudgetSettings(max_calls=first_run_calls + 5), predict=False)
    assert sum(standin.calls.values()) <= first_run_calls + 5
    assert sweep.states[0].summary["backend_calls"] == first_run_calls
    partial = sweep.states[1].run_dir / "log.jsonl.partial"
    records = [json.loads(line) for line in partial.read_text().splitlines()]
    assert records[-1]["event"] == "stopped" and records[-1]["reason"] == "budget"
    resumed = make_sweep(spec, tmp_path / "cache")
    assert [s.index for s in resumed.pending] == [1, 2, 3, 4, 5]
    resumed.run()  # no budget now: it finishes, and no call is paid twice
    assert sum(standin.calls.values()) == uninterrupted


def _summaries(runs: Path) -> set[Path]:
    return set(runs.glob("tiny/*/summary.json"))


def test_killed_sweep_finishes_only_the_remaining_runs(tmp_path: Path) -> None:
    ref_dir, work = tmp_path / "ref", tmp_path / "work"
    ref_dir.mkdir()
    work.mkdir()
    base_cmd = [sys.executable, str(DRIVER), "-q", "--json"]
    ref_env = {**os.environ, "DLNFLOW_RUNS_DIR": str(ref_dir / "runs")}
    ref_spec = write_spec(ref_dir)
    ref_cmd = base_cmd + ["--cache-dir", str(ref_dir / "cache"), "train", str(ref_spec), *SWEEP_ARGS]
    done = subprocess.run(ref_cmd, check=False, env=ref_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reference = json.loads(done.stdout)
    env = {**os.environ, "DLNFLOW_RUNS_DIR": str(work / "runs")}
    spec = write_spec(work)
    cmd = base_cmd + ["--cache-dir", str(work / "cache"), "train", str(spec), *SWEEP_ARGS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _summaries(work / "runs") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    finished = len(_summaries(work / "runs"))
    assert 1 <= finished < 6
    assert not (work / "tiny.lock.yaml").exists()
    again = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert sum(r["skipped"] for r in out["runs"]) == finished
    assert [r["metrics"] for r in out["runs"]] == [r["metrics"] for r in reference["runs"]]
    assert out["backend_calls"] < reference["backend_calls"]
    assert (work / "tiny.lock.yaml").read_bytes() == (ref_dir / "tiny.lock.yaml").read_bytes()


@pytest.mark.real
def test_sweep_on_the_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two seeds x one setting, one iteration each, on the embedded model; the rerun calls nothing."""
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, iterations=1)
    base = compile_spec(spec)
    matrix, _ = matrix_for(base, (1, 2), [("train.prompt_candidates", [2])])
    states = Sweep(base, matrix, tmp_path / "cache").run()
    assert all(s.summary["backend_calls"] > 0 for s in states)
    assert all(0.0 <= s.summary["metrics"]["test"] <= 1.0 for s in states)
    # the second seed reuses the first one's evaluation of the initial prompt (same greedy calls)
    assert states[1].summary["cache_hits"] >= 16
    again = Sweep(base, matrix, tmp_path / "cache")
    assert again.pending == []
    sweep = Sweep(base, matrix, tmp_path / "cache")
    lock = yaml.safe_load(sweep.write_lock().read_text())
    assert lock["models"]["local"]["backend"] == "llamacpp" and lock["sweep"]["seeds"] == [1, 2]
    # the same sweep with one run forgotten replays it from the cache with zero calls
    (states[0].run_dir / "summary.json").unlink()
    replay = Sweep(base, matrix, tmp_path / "cache")
    replay.run()
    assert replay.states[0].summary["backend_calls"] == 0
    assert replay.states[0].summary["metrics"] == states[0].summary["metrics"]


# -- eval and run after a sweep use the best run's settings ---------------------------------------
def _think_lengths(model: StandIn) -> set[int]:
    """max_tokens of the hidden layer's greedy forward calls the stand-in answered (not the rewrites)."""
    return {r.max_tokens for r in model.log if r.op == "generate" and r.temperature == 0.0}


def test_eval_and_run_apply_the_best_runs_inference_settings(standin: StandIn, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from helpers import TWO_LAYERS

    from dlnflow.cli import cli

    standin.gen = lambda r: " ".join(["note"] * min(r.max_tokens, 6))  # the hidden text grows with max_tokens
    standin.cls = None  # class scores hash the whole context, hidden text included
    spec = write_spec(tmp_path, layers=TWO_LAYERS, iterations=1)  # the spec says max_tokens: 8
    args = ["--json", "train", str(spec), "--seeds", "1,2", "--set", "layers.think.generate.max_tokens=3,5",
            "--set", "train.prompt_candidates=2"]
    trained = CliRunner().invoke(cli, args)
    assert trained.exit_code == 0, trained.output
    lock = read_lock(tmp_path / "tiny.lock.yaml")
    best = lock["sweep"]["best"]
    chosen = best["overrides"]["layers.think.generate.max_tokens"]
    assert chosen in (3, 5) and best["overrides"]["train.prompt_candidates"] == 2

    standin.log.clear()
    result = CliRunner().invoke(cli, ["--json", "eval", str(spec)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert _think_lengths(standin) <= {chosen}  # answered with the best run's decoding, never the spec's 8
    assert out["accuracy"] == lock["metrics"]["test"] and out["backend_calls"] == 0  # the run's own test calls
    assert out["best_run"] == {"run": best["run"], "seed": best["seed"], "problem": None,
                               "applied": {"layers.think.generate.max_tokens": chosen},
                               "training_only": {"train.prompt_candidates": 2, "train.seed": best["seed"]}}
    assert "drifted" not in out["lock_note"]
    text = CliRunner().invoke(cli, ["eval", str(spec)]).stderr
    assert f"best run {best['run']}" in text and f"layers.think.generate.max_tokens={chosen}" in text

    standin.log.clear()
    ran = CliRunner().invoke(cli, ["--json", "run", str(spec), "--input", "a brand new word"])
    assert ran.exit_code == 0, ran.output
    assert _think_lengths(standin) == {chosen}
    assert json.loads(ran.stdout)["best_run"]["applied"] == {"layers.think.generate.max_tokens": chosen}
    initial = CliRunner().invoke(cli, ["--json", "eval", str(spec), "--initial"])
    assert json.loads(initial.stdout)["best_run"] is None  # the spec's own prompts and settings

    with Network.load(spec) as net:  # the Python API does what eval and run do
        net.predict(["kiwi"])  # models built with the spec's settings first
        net.use_lock()
        assert net.best_run is not None and net.best_run.applied == {"layers.think.generate.max_tokens": chosen}
        standin.log.clear()
        net.predict(["yet another word"])
        assert _think_lengths(standin) == {chosen}


def test_training_only_sweeps_change_nothing_at_inference(standin: StandIn, tmp_path: Path) -> None:
    from dlnflow.lockfile.best_run import apply_best_run

    spec = write_spec(tmp_path)
    make_sweep(spec, tmp_path / "cache", seeds=(1, 2)).run()
    make_sweep(spec, tmp_path / "cache", seeds=(1, 2)).write_lock()
    with Network(compile_spec(spec), cache_dir=tmp_path / "cache") as net:
        before = net.pipeline
        best, after = apply_best_run(net.pipeline)
        assert best is not None and best.applied == {} and after is before
        assert set(best.training_only) == {"train.prompt_candidates", "train.seed"}
        assert "only training settings" in best.note()
    (tmp_path / "tiny.lock.yaml").unlink()
    with Network(compile_spec(spec), cache_dir=tmp_path / "cache") as net:
        assert apply_best_run(net.pipeline) == (None, net.pipeline)  # no lock, or not a sweep's lock


@pytest.mark.real
def test_eval_after_a_sweep_replays_the_best_run_on_the_real_model(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep over the hidden layer's max_tokens (no training steps, so it stays small); eval then
    answers with the best run's max_tokens: every call is the best run's own, replayed from the cache."""
    from click.testing import CliRunner
    from helpers import TWO_LAYERS

    from dlnflow.cli import cli

    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    spec = write_spec(tmp_path, layers=TWO_LAYERS, iterations=0)  # the spec says max_tokens: 8
    one_thread = "local: {backend: llamacpp, n_threads: 1}"  # a busy machine makes waiting threads spin
    spec.write_text(spec.read_text().replace("local: {backend: llamacpp}", one_thread))
    trained = CliRunner().invoke(cli, ["--json", "train", str(spec), "--set", "layers.think.generate.max_tokens=3,5"])
    assert trained.exit_code == 0, trained.output
    lock = read_lock(tmp_path / "tiny.lock.yaml")
    chosen = lock["sweep"]["best"]["overrides"]["layers.think.generate.max_tokens"]
    out = json.loads(CliRunner().invoke(cli, ["--json", "eval", str(spec)]).stdout)
    assert out["best_run"]["applied"] == {"layers.think.generate.max_tokens": chosen}
    assert out["backend_calls"] == 0 and out["accuracy"] == lock["metrics"]["test"]
