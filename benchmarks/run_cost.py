"""Cold vs warm cost of a full training run.

Runs ``dlnflow train SPEC --json`` twice in fresh processes against one empty cache directory:
the first run calls the model (cold), the second must replay everything from the cache (warm).
Reports wall time, backend calls and tokens of both and the warm/cold time ratio
(goal: <= 0.02 with zero backend calls), and checks that both runs wrote the same lock file bytes.

    python benchmarks/run_cost.py                       # pipelines/quickstart.yaml
    python benchmarks/run_cost.py pipelines/quickstart-dln2.yaml --name dln2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def train(spec: Path, cache: Path, runs: Path) -> tuple[dict, float, bytes]:
    env = {**os.environ, "DLNFLOW_RUNS_DIR": str(runs)}
    cmd = [sys.executable, "-m", "dlnflow", "--json", "--cache-dir", str(cache), "train", str(spec)]
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"train failed ({done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout)
    return result, wall, Path(result["lock"]).read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default=str(ROOT / "pipelines" / "quickstart.yaml"))
    ap.add_argument("--name", default="quickstart")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    spec = Path(args.spec).resolve()
    work = Path(tempfile.mkdtemp(prefix="dlnflow-runcost-"))
    local_spec = work / spec.name
    shutil.copy(spec, local_spec)  # the lock lands beside this copy, not in the project
    text = local_spec.read_text()
    if "path:" in text:
        raise SystemExit("run_cost.py expects a spec with generated data (format: task)")
    cache, runs = work / "cache", work / "runs"
    load_start = os.getloadavg()[0]
    cold, cold_wall, lock1 = train(local_spec, cache, runs)
    warm, warm_wall, lock2 = train(local_spec, cache, runs)
    row = {
        "spec": str(spec.relative_to(ROOT)) if spec.is_relative_to(ROOT) else spec.name,
        "machine": machine(),
        "date": dt.date.today().isoformat(),
        "command": "python benchmarks/run_cost.py " + " ".join(sys.argv[1:]),
        "cold": {k: cold[k] for k in ("backend_calls", "cache_hits", "prompt_tokens", "completion_tokens",
                                      "wall_seconds", "metrics")} | {"process_seconds": round(cold_wall, 2)},
        "warm": {k: warm[k] for k in ("backend_calls", "cache_hits", "prompt_tokens", "completion_tokens",
                                      "wall_seconds", "metrics")} | {"process_seconds": round(warm_wall, 2)},
        "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "warm_over_cold_process": round(warm_wall / cold_wall, 4),
        "warm_over_cold_train": round(warm["wall_seconds"] / max(cold["wall_seconds"], 1e-9), 4),
        "lock_identical": lock1 == lock2,
        "warm_backend_calls_zero": warm["backend_calls"] == 0,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"run_cost_{args.name}.json").write_text(json.dumps(row, indent=2) + "\n")
    md = [
        f"# Cold vs warm training run: {row['spec']}",
        "",
        f"- machine: {row['machine']}",
        f"- date: {row['date']}",
        f"- command: `{row['command']}`",
        f"- load average (1 min) at start / end: {row['load_average_1min']['start']} / "
        f"{row['load_average_1min']['end']} (the machine was shared with other work when above ~2)",
        "",
        "| run | backend calls | cache hits | prompt tokens | completion tokens | train s | process s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("cold", "warm"):
        r = row[name]
        md.append(f"| {name} | {r['backend_calls']} | {r['cache_hits']} | {r['prompt_tokens']} | "
                  f"{r['completion_tokens']} | {r['wall_seconds']} | {r['process_seconds']} |")
    md += [
        "",
        f"- warm/cold wall time, whole process (includes Python start-up and model load): "
        f"**{row['warm_over_cold_process']}**",
        f"- warm/cold wall time, training only (as `--json` reports it): **{row['warm_over_cold_train']}**"
        " (goal <= 0.02)",
        f"- warm run backend calls: {row['warm']['backend_calls']} (goal 0)",
        f"- lock files byte-identical: {row['lock_identical']}",
        f"- metrics: cold {row['cold']['metrics']}, warm {row['warm']['metrics']}",
        "",
    ]
    (out / f"run_cost_{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
