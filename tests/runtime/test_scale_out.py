"""Two "machines" sharing one cache tier, on the real embedded model (marker ``real``).

A machine is a ``dlnflow`` process with a local cache folder and a run folder of its own; both
use one shared remote. The first trains the quickstart (a copy in ``tmp_path``, one iteration) and
pays for every call; the second trains the same spec with zero backend calls and writes the same lock bytes.
For Redis, the server is killed while the first machine trains: the run finishes on its local
tier with one warning, and after a restart ``cache push`` uploads exactly what the remote missed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from paths import ROOT
from redis_server import PASSWORD, RedisServer

RUN_TIMEOUT = 900.0
ITERATIONS = ["--iterations", "1"]
"""One training iteration of the quickstart: evaluation, scoring of demonstration swaps and validation
calls are made, at a fraction of the full run's cost on a shared 2-core machine."""

pytestmark = pytest.mark.real


def quickstart(tmp_path: Path) -> Path:
    folder = tmp_path / "project" / "pipelines"
    folder.mkdir(parents=True)
    return Path(shutil.copy(ROOT / "pipelines" / "quickstart.yaml", folder / "quickstart.yaml"))


def machine_env(tmp_path: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLNFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["DLNFLOW_RUNS_DIR"] = str(tmp_path / name / "runs")
    return env


def train_cmd(tmp_path: Path, name: str, spec: Path, remote: str) -> list[str]:
    return [sys.executable, "-m", "dlnflow", "--json", "--cache-dir", str(tmp_path / name / "cache"),
            "--cache-remote", remote, "train", str(spec), *ITERATIONS]


def train(tmp_path: Path, name: str, spec: Path, remote: str) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(train_cmd(tmp_path, name, spec, remote), env=machine_env(tmp_path, name),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def cli(tmp_path: Path, name: str, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dlnflow", "--json", "--cache-dir", str(tmp_path / name / "cache"), *args]
    proc = subprocess.run(cmd, env=machine_env(tmp_path, name), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def take_lock(spec: Path) -> bytes:
    """The lock's bytes; the file is removed so the next machine must write it itself."""
    lock = spec.with_name("quickstart.lock.yaml")
    data = lock.read_bytes()
    lock.unlink()
    return data


def no_password_anywhere(tmp_path: Path, *texts: str) -> None:
    assert all(PASSWORD not in t for t in texts)
    leaks = [p for p in (tmp_path / "project").rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    for name in ("m1", "m2"):
        leaks += [p for p in (tmp_path / name).rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert leaks == []


def test_two_machines_share_a_file_remote(tmp_path: Path) -> None:
    spec = quickstart(tmp_path)
    remote = f"file://{tmp_path / 'team-cache'}"
    first, _ = train(tmp_path, "m1", spec, remote)
    lock = take_lock(spec)
    assert first["backend_calls"] > 0
    objects = list((tmp_path / "team-cache").glob("??/??/*.json"))
    assert len(objects) == first["backend_calls"]  # every paid call was shared, once
    second, err = train(tmp_path, "m2", spec, remote)
    assert second["backend_calls"] == 0 and "warning" not in err
    assert second["cache_hits"] == first["cache_hits"] + first["backend_calls"]
    assert spec.with_name("quickstart.lock.yaml").read_bytes() == lock


def _redis_keys(server: RedisServer) -> int:
    import redis

    client = redis.Redis.from_url(server.url, socket_timeout=2)
    try:
        return sum(1 for _ in client.scan_iter(match="dlnflow:v2:*", count=1000))
    finally:
        client.close()


@pytest.mark.redis
def test_redis_killed_mid_run_then_push_then_a_second_machine(
        redis_factory: Callable[..., RedisServer], tmp_path: Path) -> None:
    server = redis_factory(persist=True)
    spec = quickstart(tmp_path)
    proc = subprocess.Popen(train_cmd(tmp_path, "m1", spec, server.url), env=machine_env(tmp_path, "m1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + RUN_TIMEOUT
    while _redis_keys(server) < 80:  # the first evaluations are in; training goes on
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before Redis was killed"
        time.sleep(0.2)
    server.kill()
    out, err = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    first = json.loads(out)
    warnings_shown = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings_shown) == 1 and "continuing with the local cache only" in warnings_shown[0]
    lock = take_lock(spec)

    server.start()  # the same port; it reloads what it had written before the kill
    kept = _redis_keys(server)
    local = cli(tmp_path, "m1", "cache", "stats")["entries"]
    assert 80 <= kept < local == first["backend_calls"]
    pushed = cli(tmp_path, "m1", "cache", "push", server.url)
    assert (pushed["local_entries"], pushed["already_on_remote"], pushed["uploaded"]) == (local, kept, local - kept)
    assert _redis_keys(server) == local  # nothing lost, nothing extra

    second, err2 = train(tmp_path, "m2", spec, server.url)
    assert second["backend_calls"] == 0 and "warning" not in err2
    assert spec.with_name("quickstart.lock.yaml").read_bytes() == lock
    no_password_anywhere(tmp_path, out, err, err2, json.dumps(second), json.dumps(pushed))


def test_two_local_jobs_give_what_the_sequential_sweep_gives(tmp_path: Path) -> None:
    """``--jobs 2``: two runs at once in two worker processes (no Ray); the sequential sweep, in
    another project sharing the remote, replays them with zero calls into the same lock and points."""
    remote = f"file://{tmp_path / 'team-cache'}"
    sweep = ["--seeds", "1,2", "--set", "train.iterations=0"]
    specs = {}
    for name in ("jobs", "sequential"):
        folder = tmp_path / name / "pipelines"
        folder.mkdir(parents=True)
        specs[name] = Path(shutil.copy(ROOT / "pipelines" / "quickstart.yaml", folder / "quickstart.yaml"))
    outs = {}
    for name, extra in (("jobs", ["--jobs", "2"]), ("sequential", [])):
        cmd = [sys.executable, "-m", "dlnflow", "--json", "--cache-dir", str(tmp_path / name / "cache"),
               "--cache-remote", remote, "train", str(specs[name]), *sweep, *extra]
        proc = subprocess.run(cmd, env=machine_env(tmp_path, name), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[name] = json.loads(proc.stdout)
    jobs, seq = outs["jobs"], outs["sequential"]
    assert jobs["backend_calls"] > 0 and seq["backend_calls"] == 0
    assert len({r["worker"] for r in jobs["runs"]}) == 2  # two processes, one run each
    assert [r["metrics"] for r in jobs["runs"]] == [r["metrics"] for r in seq["runs"]]
    assert jobs["points"] == seq["points"]
    assert specs["jobs"].with_name("quickstart.lock.yaml").read_bytes() == \
        specs["sequential"].with_name("quickstart.lock.yaml").read_bytes()
