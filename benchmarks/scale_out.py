"""Scaling out: one sweep sequentially, on 2 local processes and on a 2-node Ray cluster; and the
cost of one cache hit from the local tier, a ``file://`` remote and Redis.

Part 1 trains the same 4-run sweep of the quickstart (seeds 1,2 x ``train.prompt_candidates=2,3``,
1 iteration) on the embedded model three ways, each from an empty cache and in a fresh project:

- ``sequential``: ``dlnflow train ... `` (one run after the other);
- ``jobs2``: ``--jobs 2`` (two worker processes, no Ray);
- ``ray2``: ``--executor ray`` on a two-node Ray cluster started here (``ray start --head`` on
  127.0.0.2 and a second node, one CPU each), workers sharing a ``file://`` remote.

It reports wall time, the ratio to the sequential time, and the ratio to the ideal on two workers
(half the sequential time), plus whether the lock files and ``results`` tables are identical.

Part 2 times lookups of warm entries (one key per lookup, the same keys every way):
the local tier from memory (the table in front of SQLite), the local tier from disk (a store that
keeps nothing in memory), a ``file://`` remote and a Redis server (``redis-server`` on 127.0.0.1
started here), and reports each as a ratio to the local disk hit.

    python benchmarks/scale_out.py                 # both parts
    python benchmarks/scale_out.py --skip-sweeps   # part 2 only

Writes ``results/scale_out.md`` and ``results/scale_out.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["--seeds", "1,2", "--set", "train.prompt_candidates=2,3", "--set", "train.iterations=3"]
LOOKUPS = 2000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("DLNFLOW_", "RAY_ADDRESS"))}
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out["RAY_USAGE_STATS_ENABLED"] = "0"
    out["RAY_worker_niceness"] = "0"  # Ray's default (15) would put its workers behind everything else
    return out


def project(base: Path, name: str) -> Path:
    folder = base / name / "pipelines"
    folder.mkdir(parents=True)
    (base / name / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    return Path(shutil.copy(ROOT / "pipelines" / "quickstart.yaml", folder / "quickstart.yaml"))


# -- part 1 ------------------------------------------------------------------------------------------
class Cluster:
    """A two-node Ray cluster on loopback, stopped by the PIDs of its ``ray start --block`` processes."""

    def __init__(self, temp: Path):
        ray = str(Path(sys.executable).with_name("ray"))
        self.address = f"127.0.0.2:{free_port()}"
        common = ["--num-cpus", "1", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats", "--block"]
        self.log = open(temp / "ray-nodes.log", "ab")  # noqa: SIM115
        head = [ray, "start", "--head", "--node-ip-address", "127.0.0.2", "--port", self.address.split(":")[1],
                "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                "--include-dashboard", "false", "--temp-dir", str(temp), *common]
        worker = [ray, "start", "--address", self.address, "--dashboard-agent-listen-port", str(free_port()), *common]
        self.procs = [subprocess.Popen(head, stdout=self.log, stderr=subprocess.STDOUT, env=env())]
        self._wait(1)
        self.procs.append(subprocess.Popen(worker, stdout=self.log, stderr=subprocess.STDOUT, env=env()))
        self._wait(2)

    def _wait(self, nodes: int) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        for _ in range(240):
            out = subprocess.run([ray, "status", "--address", self.address], env=env(), capture_output=True,
                                 text=True, check=False).stdout
            if out.count("node_") >= nodes:
                return
            time.sleep(1)
        raise RuntimeError("the Ray cluster did not start")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=60)
        self.log.close()


def sweep(spec: Path, extra: list[str], head: list[str] | None = None,
          more_env: dict[str, str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dlnflow", "--json", *(head or []), "train", str(spec), *SWEEP, *extra]
    started = time.monotonic()
    proc = subprocess.run(cmd, env={**env(), **(more_env or {})}, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout)
    table = subprocess.run([sys.executable, "-m", "dlnflow", "results", str(spec)], env=env(),
                           capture_output=True, text=True, check=True).stdout
    return {"wall_s": round(wall, 2), "backend_calls": out["backend_calls"], "cache_hits": out["cache_hits"],
            "lock": spec.with_name("quickstart.lock.yaml").read_text(), "table": table,
            "points": out["points"]}


def part_sweeps(base: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    rows["sequential, 1 thread"] = sweep(project(base, "sequential1"), [], more_env={"DLNFLOW_THREADS": "1"})
    rows["sequential"] = sweep(project(base, "sequential"), [])
    rows["jobs2"] = sweep(project(base, "jobs2"), ["--jobs", "2"])
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    cluster = Cluster(temp)
    try:
        remote = f"file://{base / 'shared-cache'}"
        rows["ray2"] = sweep(project(base, "ray2"), ["--executor", "ray", "--address", cluster.address],
                             ["--cache-remote", remote])
    finally:
        cluster.stop()
        shutil.rmtree(temp, ignore_errors=True)
    seq, one_core = rows["sequential"], rows["sequential, 1 thread"]
    for row in rows.values():
        row["ratio_to_sequential"] = round(row["wall_s"] / seq["wall_s"], 3)
        row["ratio_to_ideal_2"] = round(row["wall_s"] / (one_core["wall_s"] / 2), 3)
        row["same_lock"] = row["lock"] == seq["lock"]
        row["same_table"] = row["table"] == seq["table"]
    return rows


# -- part 2 ------------------------------------------------------------------------------------------
def part_hits(base: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from dlnflow.core.backend import Request
    from dlnflow.runtime.cache import CallCache, call_key
    from dlnflow.runtime.remote import encode_object, open_store, open_tier

    ident = {"backend": "bench", "model": "m"}
    keys = [call_key(ident, Request("classify", f"input {i}", targets=(" blue", " red"))) for i in range(LOOKUPS)]
    result = {"probs": [0.25, 0.75], "prompt_tokens": 40, "completion_tokens": 0}
    port = free_port()
    redis_dir = base / "redis"
    redis_dir.mkdir()
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(redis_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        urls = {"file remote": f"file://{base / 'remote'}", "redis": f"redis://127.0.0.1:{port}/0"}
        with CallCache(base / "local") as seed:
            seed.put_many(((k, result) for k in keys), model="bench:m")
        for url in urls.values():  # seeded through the store: no time limit while filling it
            store = open_store(url)
            store.put_many([(k, encode_object(result, "bench:m")) for k in keys])
            store.close()
        timings: dict[str, float] = {}
        with CallCache(base / "local") as warm:
            for k in keys:
                warm.get(k)
            timings["local (memory)"] = _per_lookup(lambda k: warm.get(k), keys)
        with CallCache(base / "local", memory_bytes=0) as disk:
            timings["local (disk)"] = _per_lookup(lambda k: disk.get(k), keys)
        for name, url in urls.items():
            tier = open_tier(url)
            assert tier is not None
            timings[name] = _per_lookup(lambda k, t=tier: t.get_many([k])[k], keys)
            timings[name + ", batch of 100"] = _per_lookup_batched(tier, keys, 100)
            tier.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    local = timings["local (disk)"]
    return {name: {"us_per_hit": round(t * 1e6, 2), "ratio_to_local_disk": round(t / local, 2)}
            for name, t in timings.items()}


def _per_lookup(fn: Any, keys: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for k in keys:
            if fn(k) is None:
                raise RuntimeError("a warm entry was missing")
        best = min(best, (time.perf_counter() - started) / len(keys))
    return best


def _per_lookup_batched(tier: Any, keys: list[str], size: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for i in range(0, len(keys), size):
            if len(tier.get_many(keys[i : i + size])) != len(keys[i : i + size]):
                raise RuntimeError("a warm entry was missing")
        best = min(best, (time.perf_counter() - started) / len(keys))
    return best


# -- report ------------------------------------------------------------------------------------------
def report(sweeps: dict[str, Any] | None, hits: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# Scaling out: parallel sweeps and the cost of a shared cache hit", "",
             f"- machine: {meta['cpu']}, {meta['cores']} cores, Python {meta['python']}",
             f"- date: {meta['date']}",
             f"- command: `{meta['command']}`",
             f"- load average (1 min) at start / end: {meta['load_start']} / {meta['load_end']} "
             "(the machine was shared with other work when above ~2)", ""]
    if sweeps:
        lines += ["## One 4-run sweep of the quickstart, each way from an empty cache", "",
                  f"`dlnflow train pipelines/quickstart.yaml {' '.join(SWEEP)}` plus the executor flags.", "",
                  "| way | wall s | / sequential | / ideal on 2 workers | backend calls | cache hits | same lock | "
                  "same results table |", "|---|---:|---:|---:|---:|---:|---|---|"]
        for name, row in sweeps.items():
            lines.append(f"| {name} | {row['wall_s']} | {row['ratio_to_sequential']} | {row['ratio_to_ideal_2']} | "
                         f"{row['backend_calls']} | {row['cache_hits']} | {row['same_lock']} | {row['same_table']} |")
        lines += ["", "`sequential` lets the embedded model use every core (its default); `sequential, 1 thread` "
                  "runs it on one (`DLNFLOW_THREADS=1`), as each parallel worker does (`--jobs 2` gives each "
                  "worker half the cores, a Ray task one). The ideal on two workers is half the one-thread "
                  "sequential time; 1.0 in that column would be perfect scaling. On a machine whose cores "
                  "the model already uses in one run, parallel runs can gain on `sequential` only what "
                  "llama.cpp does not spread over threads (Python, sampling, the cache, model loading).", ""]
        calls = {row["backend_calls"] for row in sweeps.values()}
        if len(calls) > 1:
            lines += ["Parallel runs that start together both pay for calls they share (the first evaluation "
                      "of the spec's prompts), so they can make more backend calls than the sequential sweep.", ""]
    lines += [f"## One cache hit ({LOOKUPS} warm keys, one per lookup unless batched; best of 3)", "",
              "| tier | us per hit | ratio to a local disk hit |", "|---|---:|---:|"]
    lines += [f"| {name} | {row['us_per_hit']} | {row['ratio_to_local_disk']} |" for name, row in hits.items()]
    lines += ["", "The client looks a batch of misses up on the remote in one request (`MGET` for Redis), "
              "and copies hits into the local tier, so a key costs the remote price once per machine.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-sweeps", action="store_true", help="only time cache hits")
    args = parser.parse_args()
    meta = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": sys.version.split()[0],
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/scale_out.py" + (" --skip-sweeps" if args.skip_sweeps else ""),
            "load_start": round(os.getloadavg()[0], 2)}
    base = Path(tempfile.mkdtemp(prefix="dlnflow-scale-"))
    try:
        sweeps = None if args.skip_sweeps else part_sweeps(base)
        hits = part_hits(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    meta["load_end"] = round(os.getloadavg()[0], 2)
    out = ROOT / "benchmarks" / "results"
    for row in (sweeps or {}).values():
        row.pop("lock")
        row.pop("table")
        row.pop("points")
    (out / "scale_out.json").write_text(json.dumps({"meta": meta, "sweeps": sweeps, "hits": hits}, indent=2) + "\n")
    text = report(sweeps, hits, meta)
    (out / "scale_out.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
