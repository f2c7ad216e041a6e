"""Kill `dlnflow train` at random moments, rerun it, and get the uninterrupted run's lock file byte for byte."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import write_spec
from paths import DRIVER

from dlnflow.runtime.cache import CallCache

TRIALS = int(os.environ.get("DLNFLOW_KILL_TRIALS", "10"))


def train_cmd(spec: Path, cache: Path) -> list[str]:
    return [sys.executable, str(DRIVER), "--cache-dir", str(cache), "-q", "train", str(spec)]


def run_to_end(spec: Path, cache: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(train_cmd(spec, cache), env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


def test_killed_runs_resume_to_the_same_lock(tmp_path: Path) -> None:
    env = {**os.environ, "DLNFLOW_RUNS_DIR": str(tmp_path / "runs")}
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    ref_spec = write_spec(ref_dir, iterations=3)
    full = run_to_end(ref_spec, tmp_path / "ref-cache", env)
    reference = (ref_dir / "tiny.lock.yaml").read_bytes()

    rng = np.random.default_rng(2024)
    work = tmp_path / "work"
    work.mkdir()
    spec = write_spec(work, iterations=3)
    cache = tmp_path / "cache"
    killed = 0
    for trial in range(TRIALS):
        proc = subprocess.Popen(train_cmd(spec, cache), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.05, max(full, 0.2))))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(timeout=30)
        lock = work / "tiny.lock.yaml"
        if lock.exists():  # a lock, if present, is never half-written
            assert lock.read_bytes() == reference, f"trial {trial}: lock differs"
    run_to_end(spec, cache, env)
    assert (work / "tiny.lock.yaml").read_bytes() == reference
    assert killed >= TRIALS // 2, f"only {killed} of {TRIALS} runs were killed mid-way"
    with CallCache(cache) as c:
        assert c.verify() == []
        assert len(c) > 0
    leftovers = [p for p in work.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


@pytest.mark.real
def test_warm_rerun_after_kill_on_the_real_model(tmp_path: Path) -> None:
    """One kill on the real embedded model: the rerun finishes and reuses what was cached."""
    env = {**os.environ, "DLNFLOW_RUNS_DIR": str(tmp_path / "runs")}
    spec = write_spec(tmp_path, iterations=1)
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "dlnflow", "--cache-dir", str(cache), "-q", "train", str(spec)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with CallCache(cache) as c:
        before = len(c)
        assert c.verify() == []
    done = subprocess.run(cmd + [], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "tiny.lock.yaml").exists()
    with CallCache(cache) as c:
        assert len(c) >= before
