"""Kill `dlnflow train` while it trains, rerun it, and get the uninterrupted run's lock file byte for byte.

Every kill is checked to have landed during training: after the run log shows a finished iteration and
before the run's ``summary.json`` exists. Each trial starts from an empty cache, so what the rerun pays
for can be compared with what the killed run had stored.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import write_spec
from paths import DRIVER, ROOT

from dlnflow.runtime.cache import CallCache

TRIALS = int(os.environ.get("DLNFLOW_KILL_TRIALS", "4"))
POLL = 0.005


@dataclass
class Trial:
    """One folder with its own spec, cache and runs: nothing is shared between trials."""

    folder: Path

    @property
    def spec(self) -> Path:
        return self.folder / "tiny.yaml"

    @property
    def lock(self) -> Path:
        return self.folder / "tiny.lock.yaml"

    @property
    def cache(self) -> Path:
        return self.folder / "cache"

    @property
    def runs(self) -> Path:
        return self.folder / "runs"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DLNFLOW_RUNS_DIR": str(self.runs)}


def make_trial(folder: Path, iterations: int) -> Trial:
    folder.mkdir()
    write_spec(folder, iterations=iterations)
    return Trial(folder)


def train_cmd(trial: Trial, driver: list[str]) -> list[str]:
    return [*driver, "--cache-dir", str(trial.cache), "--json", "train", str(trial.spec)]


def run_to_end(trial: Trial, driver: list[str], timeout: float) -> dict:
    done = subprocess.run(train_cmd(trial, driver), env=trial.env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def stored_keys(cache: Path) -> set[str]:
    """The keys in the cache's database, read without dlnflow."""
    db = cache / "cache.db"
    if not db.exists():
        return set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM Cache")}


def finished_steps(runs: Path) -> int:
    """How many training iterations the run log (still partial or finished) records."""
    count = 0
    for log in [*runs.glob("*/*/log.jsonl.partial"), *runs.glob("*/*/log.jsonl")]:
        try:
            lines = log.read_text().splitlines()
        except FileNotFoundError:  # renamed while we looked
            continue
        count = max(count, sum('"event": "step"' in line for line in lines))
    return count


def summaries(runs: Path) -> list[Path]:
    return list(runs.glob("*/*/summary.json"))


def temporaries(trial: Trial) -> list[Path]:
    return [p for p in trial.folder.rglob("*.tmp") if "cache" not in p.parts]


def timed_run(trial: Trial, driver: list[str], timeout: float) -> tuple[dict, float]:
    """Run to the end; also return the seconds between the first logged iteration and the summary."""
    proc = subprocess.Popen(train_cmd(trial, driver), env=trial.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline, first = time.monotonic() + timeout, None
    while not summaries(trial.runs) and proc.poll() is None and time.monotonic() < deadline:
        if first is None and finished_steps(trial.runs) >= 1:
            first = time.monotonic()
        time.sleep(POLL)
    span = time.monotonic() - (first or time.monotonic())
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert first is not None, "the run's first iteration was never seen in its log"
    return json.loads(out), span


def kill_during_training(trial: Trial, driver: list[str], delay: float, timeout: float) -> int:
    """Start a run, wait for its first finished iteration plus ``delay``, kill it; return the steps logged.

    Fails the test if the run ended (its summary written) before the kill could land.
    """
    proc = subprocess.Popen(train_cmd(trial, driver), env=trial.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while finished_steps(trial.runs) < 1:
            assert proc.poll() is None, "the run ended before it logged an iteration"
            assert time.monotonic() < deadline, "no iteration was logged in time"
            time.sleep(POLL)
        time.sleep(delay)
        assert not summaries(trial.runs) and proc.poll() is None, "the run finished before the kill"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not summaries(trial.runs) and not trial.lock.exists()  # the kill landed before the end
    return finished_steps(trial.runs)


def die_while_writing(target: Path) -> Path:
    """A writer process killed inside the atomic writer of ``target``: returns the temporary it left."""
    code = ("import os, signal, sys; from pathlib import Path; from dlnflow._util.files import atomic_writer\n"
            "with atomic_writer(Path(sys.argv[1])) as h:\n"
            "    h.write(b'half a lock'); h.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(target)], env=env, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    left = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.") and p.suffix == ".tmp"]
    assert len(left) == 1
    return left[0]


def check_resume(trial: Trial, driver: list[str], reference: bytes, full_keys: set[str], timeout: float) -> dict:
    """Rerun a killed trial: same lock, calls paid only for what was missing, no temporary left."""
    before = stored_keys(trial.cache)
    assert before and before <= full_keys  # the killed run stored part of the full run's calls, nothing else
    with CallCache(trial.cache) as c:
        assert c.verify() == []
    rerun = run_to_end(trial, driver, timeout)
    assert trial.lock.read_bytes() == reference
    assert rerun["backend_calls"] == len(full_keys - before), "the rerun paid for calls already stored"
    assert stored_keys(trial.cache) == full_keys
    assert temporaries(trial) == []
    return {"stored": len(before), "rerun_calls": rerun["backend_calls"]}


def test_killed_runs_resume_to_the_same_lock(tmp_path: Path) -> None:
    driver = [sys.executable, str(DRIVER)]
    ref = make_trial(tmp_path / "reference", iterations=3)
    full, span = timed_run(ref, driver, timeout=120)
    reference, full_keys = ref.lock.read_bytes(), stored_keys(ref.cache)
    assert full["backend_calls"] == len(full_keys) > 0
    steps = [json.loads(x) for x in next(ref.runs.glob("*/*/log.jsonl")).read_text().splitlines()]
    assert [r["iteration"] for r in steps if r.get("event") == "step"] == [1, 2, 3]

    rng = np.random.default_rng(2024)
    outcomes = []
    for i in range(TRIALS):
        trial = make_trial(tmp_path / f"trial{i}", iterations=3)
        # a kill drawn in the first third of the time the reference run spent after its first logged
        # iteration lands during training whenever the machine's pace holds roughly steady
        steps_seen = kill_during_training(trial, driver, float(rng.uniform(0.0, span / 3)), timeout=120)
        assert 1 <= steps_seen < 3
        if i == 0:  # also a writer killed inside the lock file's atomic write
            left = die_while_writing(trial.lock)
        outcomes.append(check_resume(trial, driver, reference, full_keys, timeout=120))
        if i == 0:
            assert not left.exists()
    print(f"\nfull run: {len(full_keys)} calls, {span:.2f}s from its first logged iteration to its summary; "
          f"killed trials (stored, rerun calls): {[(o['stored'], o['rerun_calls']) for o in outcomes]}")



@pytest.mark.real
def test_killed_run_on_the_real_model_resumes_to_the_same_lock(tmp_path: Path) -> None:
    """One kill on the real embedded model after its first logged iteration; the rerun matches a clean run."""
    driver = [sys.executable, "-m", "dlnflow"]
    ref = make_trial(tmp_path / "reference", iterations=1)
    full = run_to_end(ref, driver, timeout=900)
    full_keys = stored_keys(ref.cache)
    assert full["backend_calls"] == len(full_keys) > 0
    trial = make_trial(tmp_path / "killed", iterations=1)  # killed during the final test evaluation
    assert kill_during_training(trial, driver, 0.0, timeout=900) == 1
    check_resume(trial, driver, ref.lock.read_bytes(), full_keys, timeout=900)
