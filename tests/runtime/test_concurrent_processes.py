"""Several processes on one cache folder at once: no corruption, no lost entries, no extra ones.

Four ``dlnflow train`` processes train four different specs on one cache folder at the same
time (the stand-in model, through ``drive_standin.py``; two specs share their initial prompt and
data, so they write some of the same keys at once) while a fifth process runs ``dlnflow cache
stats`` in a loop. Each spec was first trained alone on a cache of its own; afterwards the shared
cache must hold exactly the union of those entries with the same values, ``dlnflow cache verify``
must find nothing wrong, every lock file must match the lone run's byte for byte, and training
each spec again must make zero backend calls. The ``real`` variant puts one process on the real
embedded model among them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import ONE_LAYER, TWO_LAYERS, write_spec
from paths import DRIVER

DEADLINE = 240.0  # seconds the concurrent phase may take at most
SPECS: list[tuple[str, str, str, int]] = [  # (name, method, layers, seed)
    ("dln1-a", "dln1", ONE_LAYER, 3),
    ("dln1-b", "dln1", ONE_LAYER, 5),  # same data and initial prompt as dln1-a: overlapping keys
    ("vi", "vi", TWO_LAYERS, 3),
    ("ape", "ape", ONE_LAYER, 3),
]


def make_spec(folder: Path, name: str, method: str, layers: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_spec(folder, method=method, iterations=3, layers=layers, name=f"{name}.yaml")
    text = path.read_text().replace("name: tiny", f"name: {name}").replace("  seed: 3\n", f"  seed: {seed}\n")
    path.write_text(text)
    return path


def train_cmd(spec: Path, cache: Path, real: bool = False) -> list[str]:
    head = [sys.executable, "-m", "dlnflow"] if real else [sys.executable, str(DRIVER)]
    return [*head, "--json", "--cache-dir", str(cache), "train", str(spec)]


def entries(cache: Path) -> dict[str, str]:
    """key -> stored JSON text, read straight from the database."""
    with sqlite3.connect(f"file:{cache / 'cache.db'}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT key, value FROM Cache").fetchall())


def finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{proc.args}: exit {proc.returncode}\n{out}\n{err}"
    assert "Traceback" not in err
    return json.loads(out)  # type: ignore[no-any-return]


@dataclass
class StatsLoop:
    """A thread that runs ``dlnflow cache stats`` over and over until told to stop."""

    cache: Path
    env: dict[str, str]
    runs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        cmd = [sys.executable, "-m", "dlnflow", "--json", "--cache-dir", str(self.cache), "cache", "stats"]
        deadline = time.monotonic() + DEADLINE
        while not self._stop.is_set() and time.monotonic() < deadline:
            done = subprocess.run(cmd, check=False, env=self.env, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                self.failures.append(done.stdout + done.stderr)
            else:
                self.runs.append(json.loads(done.stdout))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


def run_together(commands: list[list[str]], env: dict[str, str], cache: Path) -> tuple[list[dict[str, Any]],
                                                                                      StatsLoop]:
    """Start all ``commands`` at once beside a stats loop; wait for all; return their JSON outputs."""
    stats = StatsLoop(cache, env)
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    try:
        outputs = [finish(p, DEADLINE) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        stats.stop()
    return outputs, stats


def check_stats(stats: StatsLoop, final: int) -> None:
    assert stats.failures == []
    counts = [s["entries"] for s in stats.runs]
    assert len(counts) >= 2, "the stats loop ran less than twice during training"
    assert counts == sorted(counts) and counts[-1] <= final


def verify(cache: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dlnflow", "--json", "--cache-dir", str(cache), "cache", "verify"]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["problems"] == []
    return report  # type: ignore[no-any-return]


def lone_references(tmp_path: Path, env: dict[str, str], specs: list[tuple[str, str, str, int]]
                    ) -> tuple[list[Path], dict[str, str]]:
    """Each spec trained alone on its own cache: the lock files and the union of the entries."""
    locks: list[Path] = []
    union: dict[str, str] = {}
    for name, method, layers, seed in specs:
        folder = tmp_path / "alone" / name
        spec = make_spec(folder, name, method, layers, seed)
        done = subprocess.run(train_cmd(spec, folder / "cache"), check=False, env=env, capture_output=True,
                              text=True, timeout=DEADLINE)
        assert done.returncode == 0, done.stdout + done.stderr
        locks.append(spec.with_name(f"{name}.lock.yaml"))
        union.update(entries(folder / "cache"))
    return locks, union


def test_four_trainers_and_a_stats_loop_share_one_cache(tmp_path: Path) -> None:
    env = {**os.environ, "DLNFLOW_RUNS_DIR": str(tmp_path / "runs")}
    alone = {**env, "DLNFLOW_RUNS_DIR": str(tmp_path / "runs-alone")}
    ref_locks, union = lone_references(tmp_path, alone, SPECS)
    cache = tmp_path / "shared-cache"
    specs = [make_spec(tmp_path / "shared" / name, name, method, layers, seed)
             for name, method, layers, seed in SPECS]
    outputs, stats = run_together([train_cmd(s, cache) for s in specs], env, cache)
    stored = entries(cache)
    print(f"\n{len(specs)} trainers, {sum(o['backend_calls'] for o in outputs)} backend calls, "
          f"{len(stored)} entries checked, stats ran {len(stats.runs)} times")
    assert stored == union  # nothing lost, nothing extra, the same values
    assert sum(o["backend_calls"] for o in outputs) >= len(stored)
    check_stats(stats, len(stored))
    assert verify(cache, env)["entries"] == len(union)
    for spec, ref in zip(specs, ref_locks, strict=True):
        assert spec.with_name(ref.name).read_bytes() == ref.read_bytes()
    again, _ = run_together([train_cmd(s, cache) for s in specs], env, cache)
    assert [o["backend_calls"] for o in again] == [0] * len(specs)
    assert entries(cache) == union


@pytest.mark.real
def test_a_real_model_process_among_the_trainers(tmp_path: Path) -> None:
    env = {**os.environ, "DLNFLOW_RUNS_DIR": str(tmp_path / "runs")}
    _, union = lone_references(tmp_path, {**env, "DLNFLOW_RUNS_DIR": str(tmp_path / "runs-alone")}, SPECS[:3])
    cache = tmp_path / "shared-cache"
    specs = [make_spec(tmp_path / "shared" / name, name, method, layers, seed)
             for name, method, layers, seed in SPECS[:3]]
    (tmp_path / "real").mkdir()
    real_spec = write_spec(tmp_path / "real", iterations=1)
    commands = [*(train_cmd(s, cache) for s in specs), train_cmd(real_spec, cache, real=True)]
    outputs, stats = run_together(commands, env, cache)
    real_calls = outputs[-1]["backend_calls"]
    stored = entries(cache)
    stand_in = {k: v for k, v in stored.items() if k in union}
    assert stand_in == union
    print(f"\n3 stand-in trainers + 1 real, {len(stored)} entries checked ({real_calls} from the real "
          f"model), stats ran {len(stats.runs)} times")
    assert real_calls > 0
    assert len(stored) == len(stand_in) + real_calls  # the real model's keys are its own
    check_stats(stats, len(stored))
    verify(cache, env)
    again, _ = run_together(commands, env, cache)
    assert [o["backend_calls"] for o in again] == [0] * len(commands)
