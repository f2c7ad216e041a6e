"""``accuracy.py --dry``: the predicted model calls and CPU time of every planned row, run nothing.

Calls come from dlnflow's own dry run (:mod:`dlnflow.planning`): the training algorithm runs on
placeholder answers against the benchmark's call cache, so calls already cached are free. Rows
share what the real runs share and nothing more:

- one cache view per task holds the 0-shot evaluation of dev and test, which every one-layer row
  starts with (``dev_before`` / ``test_before``), and the non-iterative rows (0-shot, few-shot and
  their calibrated twins; a twin with batch calibration asks for exactly its base row's requests);
- every training row (DLN-1, DLN-2 and their variants) is planned on its own copy of that view,
  so its training calls count in full even where placeholders would make two rows coincide (a
  calibrated DLN-1 row decides differently from the plain one on real answers).

Only the first seed of a row kind is planned: on placeholders a later seed asks for as many new
calls (its batches and few-shot examples differ, their number does not), and a seed-free row
(0-shot and its calibrated twin) replays the first seed's calls for free.

A row whose settings this dlnflow does not know yet (calibration, demonstrations) is planned as
its base row and marked so; a demonstrations row's time is scaled by the task's few-shot/0-shot
ratio of seconds per call (its prompts carry examples).

Time = predicted new calls x seconds per real call, measured per task and method on earlier
benchmark rows run with ``--threads 1`` (default ``results/accuracy.json``, the small table:
CPU seconds / real calls of its rows with at least 20 real calls; ``--rates`` picks another file).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from accuracy_protocol import METHODS, Protocol, write_spec

from dlnflow.core.errors import DlnflowError
from dlnflow.data.dataset import load_dataset
from dlnflow.planning.backends import PlanCache, light_backend
from dlnflow.planning.dryrun import plan_run, scenario_caches
from dlnflow.runtime.cache import CallCache
from dlnflow.spec.compiler import compile_spec

HERE = Path(__file__).resolve().parent
RATES_SOURCE = HERE / "results" / "accuracy.json"
EVAL_SIBLING = {"zero-shot": "few-shot", "few-shot": "zero-shot"}
MIN_CALLS = 20  # rows with fewer real calls say little about the time per call


def seconds_per_call(path: Path) -> dict[tuple[str, str], float]:
    """CPU seconds per real model call, by (task, method) and by ("*", method), from a results JSON."""
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"].values()
    cpu: dict[tuple[str, str], float] = defaultdict(float)
    calls: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        if r.get("status") != "ok" or r.get("cpu_seconds") is None or r.get("backend_calls", 0) < MIN_CALLS:
            continue
        for key in ((r["task"], r["method"]), ("*", r["method"])):
            cpu[key] += float(r["cpu_seconds"])
            calls[key] += int(r["backend_calls"])
    return {k: cpu[k] / calls[k] for k in cpu}


def rate(rates: dict[tuple[str, str], float], task: str, method: str) -> float:
    """Seconds per call of ``method``'s base on ``task``; when that was not measured, the task's other
    evaluation-only row (0-shot for few-shot and back), else the method's mean over tasks.
    Demonstrations scale it by the task's few-shot/0-shot ratio (at least 1)."""
    base = METHODS[method].settings_of

    def one(m: str) -> float:
        sibling = EVAL_SIBLING.get(m, m)  # 0-shot and few-shot cost alike per call on one task
        return (rates.get((task, m)) or rates.get((task, sibling)) or rates.get(("*", m))
                or statistics.fmean(rates.values()))

    value = one(base)
    if any(".demos." in key for key, _ in METHODS[method].sets):
        value *= max(1.0, one("few-shot") / one("zero-shot"))
    return value


def fork(caches: dict[str, PlanCache]) -> dict[str, PlanCache]:
    """A copy of each scenario's cache view: what it holds, without what is planned on the copy later."""
    out = {}
    for name, c in caches.items():
        copy = PlanCache(c.store, c.remember)
        copy.memory, copy.real = dict(c.memory), set(c.real)
        out[name] = copy
    return out


class RowPlanner:
    """Plans rows one after the other with the sharing rules of the module docstring."""

    def __init__(self, protocol: Protocol, args: argparse.Namespace, folder: Path):
        self.protocol, self.args, self.folder = protocol, args, folder
        self.store = CallCache(args.cache_dir) if args.cache_dir.is_dir() else None
        self.tasks: dict[str, dict[str, PlanCache]] = {}
        self.backends: dict[str, Any] = {}

    def spec(self, task: str, method: str, seed: int) -> tuple[Path, str]:
        """The row's spec, or its base row's when this dlnflow lacks the row's settings."""
        path = write_spec(task, method, self.protocol, seed, self.args.data_dir, self.folder)
        if not METHODS[method].sets:
            return path, ""
        try:
            compile_spec(path)
            return path, ""
        except DlnflowError:
            base = METHODS[method].settings_of
            return write_spec(task, base, self.protocol, seed, self.args.data_dir, self.folder), base

    def plan(self, task: str, method: str, seed: int) -> dict[str, Any]:
        path, planned_as = self.spec(task, method, seed)
        pipeline = compile_spec(path)
        dataset = load_dataset(pipeline.data, pipeline.graph.output.classes)
        models = {}
        for name, settings in pipeline.models.items():
            key = json.dumps(settings, sort_keys=True, default=str)
            if key not in self.backends:
                self.backends[key] = light_backend(settings, pipeline.spec_path.parent)
            models[name] = self.backends[key]
        shared = self.tasks.setdefault(task, scenario_caches(self.store, remember=True))
        iterative = METHODS[method].train_method in ("dln1", "vi")
        caches = fork(shared) if iterative else shared
        p = plan_run(f"{task}/{method}/{seed}", pipeline, dataset, models, caches, probe=False)
        return {"calls": p.new_calls, "range": (p.calls_never, p.calls_always), "cached": p.cached_calls,
                "prompt_tokens": p.new_prompt_tokens, "planned_as": planned_as}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def dry_run(rows: list[tuple[str, str, int]], protocol: Protocol, args: argparse.Namespace) -> int:
    """Print every row's predicted calls and CPU seconds, then totals by method; 0 on success."""
    import tempfile

    source = getattr(args, "rates", None) or RATES_SOURCE
    rates = seconds_per_call(Path(source))
    scale = float(getattr(args, "rate_scale", 1.0) or 1.0)
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    planned: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dlnflow-accuracy-dry-") as scratch:
        planner = RowPlanner(protocol, args, Path(scratch))
        try:
            print(f"dry run of {len(rows)} rows, protocol {protocol.name}; seconds per call from {source}"
                  f"{f' x {scale:g}' if scale != 1.0 else ''}")
            print("task | row | seed | new calls (range never-always) | cached | s/call | CPU s | note")
            for task, method, seed in rows:
                if METHODS[method].variant == "dspy":
                    print(f"{task} | {method} | {seed} | not planned (DSPy rows have no dry run) | | | |")
                    continue
                first = planned.get((task, method))
                if first is None:
                    got = planned[(task, method)] = {**planner.plan(task, method, seed), "seed": seed}
                elif METHODS[METHODS[method].settings_of].train_method == "none":
                    got = {**first, "calls": 0, "range": (0, 0), "note": f"replays seed {first['seed']}"}
                else:
                    got = {**first, "note": f"as seed {first['seed']}"}
                per_call = rate(rates, task, method) * scale
                seconds = got["calls"] * per_call
                totals[method][0] += got["calls"]
                totals[method][1] += seconds
                notes = [got.get("note", "")]
                if got["planned_as"]:
                    notes.append(f"planned as {got['planned_as']} (settings not in this dlnflow yet)")
                note = "; ".join(n for n in notes if n)
                lo, hi = got["range"]
                print(f"{task} | {method} | {seed} | {got['calls']} ({lo}-{hi}) | {got['cached']} | "
                      f"{per_call:.2f} | {seconds:.0f} | {note}", flush=True)
        finally:
            planner.close()
    print("\nrow | new calls | CPU min")
    for method, (calls, seconds) in totals.items():
        print(f"{method} | {calls:.0f} | {seconds / 60:.1f}")
    calls = sum(c for c, _ in totals.values())
    seconds = sum(s for _, s in totals.values())
    print(f"total | {calls:.0f} | {seconds / 60:.1f} ({seconds / 3600:.2f} h of one core)")
    return 0
