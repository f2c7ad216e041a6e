"""A seed x setting sweep killed midway, resumed, then replayed: what each pass costs.

Runs ``dlnflow train SPEC --seeds 1,2,3 --set train.prompt_candidates=3,4`` (6 runs) on the
embedded model in fresh processes, against one empty cache:

1. **killed**: the sweep is started and killed with SIGKILL once ``--kill-after`` runs have
   finished and the next one has made progress (its log has at least one iteration line);
2. **resumed**: the same command again: finished runs must be skipped, the interrupted one
   continues from the cache, the rest run;
3. **replayed**: the same command once more: zero backend calls.

Writes ``results/sweep_resume_<name>.md`` and ``.json`` with calls, cache hits and wall time
per pass and per run, and the ``dlnflow results`` table of the finished sweep.

    python benchmarks/sweep_resume.py                  # pipelines/quickstart.yaml
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
SEEDS = "1,2,3"
SETTING = "train.prompt_candidates=3,4"
RUNS_IN_SWEEP = 6


def command(spec: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "dlnflow", "--json", "--cache-dir", str(cache), "train", str(spec),
            "--seeds", SEEDS, "--set", SETTING]


def finished_runs(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.glob("*/*/summary.json"))


def partial_lines(runs: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in runs.glob("*/*/log.jsonl.partial"))


def killed_pass(spec: Path, cache: Path, runs: Path, env: dict[str, str], kill_after: int,
                timeout: float) -> dict[str, Any]:
    """Start the sweep, SIGKILL it when ``kill_after`` runs are done and the next one has begun."""
    started = time.monotonic()
    proc = subprocess.Popen(command(spec, cache), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise SystemExit("the sweep ended before it could be killed; raise the runs or lower --kill-after")
            if len(finished_runs(runs)) >= kill_after and partial_lines(runs) >= 1:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"no kill point within {timeout:.0f} s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    return {"finished_runs": len(finished_runs(runs)), "interrupted_log_lines": partial_lines(runs),
            "wall_s": round(time.monotonic() - started, 1), "returncode": proc.returncode}


def full_pass(spec: Path, cache: Path, env: dict[str, str]) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(command(spec, cache), env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"sweep failed ({done.returncode}):\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    runs = [{"label": Path(r["run_dir"]).name, "seed": r["seed"], "settings": r["settings"], "skipped": r["skipped"],
             "backend_calls": r["backend_calls"], "cache_hits": r.get("cache_hits")} for r in out["runs"]]
    return {"wall_s": round(time.monotonic() - started, 1), "backend_calls": out["backend_calls"],
            "cache_hits": out.get("cache_hits"), "runs": runs}


def results_table(spec: Path, cache: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "dlnflow", "--cache-dir", str(cache), "results", str(spec)],
                          env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def render(report: dict[str, Any]) -> str:
    k, r, p = report["killed"], report["resumed"], report["replayed"]
    lines = [f"# Sweep killed, resumed and replayed: {report['spec']}", "",
             f"- date: {report['date']}", f"- command: `{report['command']}`",
             f"- machine: {report['machine']}; load average (1 min) at start {report['load_start']}",
             f"- sweep: seeds {SEEDS} x `{SETTING}` = {RUNS_IN_SWEEP} runs, embedded model, one empty cache", "",
             "| pass | wall s | backend calls | runs skipped | runs trained |", "|---|---:|---:|---:|---:|",
             f"| killed (SIGKILL after {k['finished_runs']} finished runs, the next one {k['interrupted_log_lines']}"
             f" iteration(s) in) | {k['wall_s']} | - | - | {k['finished_runs']} + 1 partial |"]
    for name, res in (("resumed", r), ("replayed", p)):
        skipped = sum(x["skipped"] for x in res["runs"])
        trained = len(res["runs"]) - skipped
        lines.append(f"| {name} | {res['wall_s']} | {res['backend_calls']} | {skipped} | {trained} |")
    lines += ["", "Per run in the resumed pass:", "",
              "| run | seed | settings | skipped | backend calls | cache hits |", "|---|---:|---|---|---:|---:|"]
    lines += [f"| {x['label']} | {x['seed']} | {x['settings']} | {x['skipped']} | {x['backend_calls']} "
              f"| {x['cache_hits']} |" for x in r["runs"]]
    lines += ["", "Checks:", ""] + [f"- {c}: **{'yes' if ok else 'NO'}**" for c, ok in report["checks"].items()]
    lines += ["", "`dlnflow results` of the finished sweep:", "", report["results"], ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default=str(ROOT / "pipelines" / "quickstart.yaml"))
    ap.add_argument("--name", default="quickstart")
    ap.add_argument("--kill-after", type=int, default=2, help="finished runs before the kill (default 2)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the kill point")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if not 1 <= args.kill_after < RUNS_IN_SWEEP:
        raise SystemExit(f"--kill-after must be between 1 and {RUNS_IN_SWEEP - 1}")
    spec = Path(args.spec).resolve()
    work = Path(tempfile.mkdtemp(prefix="dlnflow-sweep-"))
    local = work / spec.name
    shutil.copy(spec, local)  # the lock lands beside this copy, not in the project
    if "path:" in local.read_text():
        raise SystemExit("sweep_resume.py expects a spec with generated data (format: task)")
    cache, runs = work / "cache", work / "runs"
    env = {**os.environ, "DLNFLOW_RUNS_DIR": str(runs)}
    load_start = round(os.getloadavg()[0], 2)
    try:
        killed = killed_pass(local, cache, runs, env, args.kill_after, args.timeout)
        resumed = full_pass(local, cache, env)
        replayed = full_pass(local, cache, env)
        table = results_table(local, cache, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    skipped = [x["skipped"] for x in resumed["runs"]]
    report = {
        "spec": str(spec.relative_to(ROOT)) if spec.is_relative_to(ROOT) else spec.name,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/sweep_resume.py " + " ".join(sys.argv[1:]),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores", "load_start": load_start,
        "killed": killed, "resumed": resumed, "replayed": replayed, "results": table,
        "checks": {
            f"resumed pass skipped exactly the {killed['finished_runs']} finished runs":
                sum(skipped) == killed["finished_runs"],
            "resumed pass trained every other run": len(skipped) == RUNS_IN_SWEEP,
            "replayed pass: zero backend calls and every run skipped":
                replayed["backend_calls"] == 0 and all(x["skipped"] for x in replayed["runs"]),
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sweep_resume_{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"sweep_resume_{args.name}.md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
