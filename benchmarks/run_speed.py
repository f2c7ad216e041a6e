"""Before vs after: wall time of DLN-1 and DLN-2 training on BBH navigate, with the time split.

"Before" is a git worktree of an earlier commit (default: where this branch left ``main``),
"after" a worktree of this checkout's ``HEAD`` (so editing the checkout during the run changes
nothing). Each (variant, method) pair trains once in a fresh process against
its own empty cache, so every call is real; the runs alternate (before DLN-1, after DLN-1,
after DLN-2, before DLN-2) so that a change in the machine's load hits both sides alike, and the
results are rewritten after every run.

The protocol: ``pipelines/navigate.yaml`` (DLN-1) and ``pipelines/navigate-dln2.yaml`` (DLN-2),
6 iterations, batch 10, 6 prompt candidates, dev every 2, data from the shared BBH folder.

From each run's cache the script also counts the generate calls and the tokens they produced,
which gives the mean length of a rewrite for DLN-1 (all its generations are rewrites) on both
sides. Besides wall time it records each run's CPU seconds (user + system of the child process),
which a busy machine disturbs less than wall time. Results go to ``benchmarks/results/run_speed_navigate.{json,md}``.

    python benchmarks/run_speed.py                    # before = merge-base with main
    python benchmarks/run_speed.py --base <commit> --methods dln1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
DATA = (ROOT.parent / "shared" / "data" / "bbh" / "navigate.json").resolve()
SPECS = {"dln1": "pipelines/navigate.yaml", "dln2": "pipelines/navigate-dln2.yaml"}
PROTOCOL = {"train.iterations": 6, "train.batch_size": 10, "train.prompt_candidates": 6,
            "train.validate_every": 2}
SPLIT: dict[str, int] = {}
"""Split sizes written into the spec copies (both sides alike) when the run must be shorter."""
KEEP = ("backend_calls", "cache_hits", "prompt_tokens", "completion_tokens", "wall_seconds", "metrics")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def local_spec(variant_root: Path, spec: str, work: Path) -> Path:
    """A copy of the variant's spec in ``work`` whose data path points at the shared data."""
    text = (variant_root / spec).read_text(encoding="utf-8")
    text = re.sub(r"(?m)^(\s*path:\s*).*navigate\.json\s*$", lambda m: f"{m.group(1)}{DATA}", text)
    for key, value in SPLIT.items():
        text, n = re.subn(rf"\b{key}: \d+", f"{key}: {value}", text, count=1)
        if n != 1:
            raise SystemExit(f"{spec}: no '{key}:' split size to replace")
    out = work / Path(spec).name
    out.write_text(text, encoding="utf-8")
    return out


def generation_stats(cache_dir: Path) -> dict[str, Any]:
    """Generate calls in a run's cache and the tokens they produced."""
    sys.path.insert(0, str(ROOT))
    from dlnflow.runtime.cache import CallCache

    calls = tokens = 0
    lengths: list[int] = []
    with CallCache(cache_dir) as cache:
        for key in list(cache._dc.iterkeys()):  # a benchmark may read the store directly
            value = cache.get(key)
            if value is not None and "text" in value:
                calls += 1
                tokens += int(value.get("completion_tokens") or 0)
                lengths.append(int(value.get("completion_tokens") or 0))
    lengths.sort()
    median = lengths[len(lengths) // 2] if lengths else 0
    return {"generate_calls": calls, "tokens_generated": tokens,
            "mean_tokens_per_generation": round(tokens / calls, 1) if calls else 0.0,
            "median_tokens_per_generation": median, "max_tokens_per_generation": max(lengths, default=0)}


def train(variant_root: Path, spec: Path, work: Path, tag: str) -> dict[str, Any]:
    cache, runs = work / f"cache-{tag}", work / f"runs-{tag}"
    env = {**os.environ, "DLNFLOW_RUNS_DIR": str(runs), "PYTHONPATH": str(variant_root)}
    sets = [arg for k, v in PROTOCOL.items() for arg in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "dlnflow", "--json", "--cache-dir", str(cache), "train", str(spec), *sets]
    load = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, cwd=variant_root, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{tag} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    row = {k: result[k] for k in KEEP} | {"process_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                                          "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}
    if "timing" in result:
        row["timing"] = result["timing"]
    row["generation"] = generation_stats(cache)
    print(f"{tag}: {row['wall_seconds']:.0f} s, metrics {row['metrics']}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=None, help="commit for 'before' (default: git merge-base HEAD main)")
    ap.add_argument("--after", default="HEAD", help="commit for 'after' (default: HEAD)")
    ap.add_argument("--methods", default="dln1,dln2")
    ap.add_argument("--dev", type=int, default=None, help="dev split size (default: the spec's 50)")
    ap.add_argument("--test", type=int, default=None, help="test split size (default: the spec's 100)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    for key, value in (("dev", args.dev), ("test", args.test)):
        if value is not None:
            SPLIT[key] = value
    base = git("rev-parse", args.base or git("merge-base", "HEAD", "main"))
    after = git("rev-parse", args.after)
    work = Path(tempfile.mkdtemp(prefix="dlnflow-speed-"))
    roots = {"before": work / "before", "after": work / "after"}
    git("worktree", "add", "--detach", str(roots["before"]), base)
    git("worktree", "add", "--detach", str(roots["after"]), after)
    rows: dict[str, dict[str, Any]] = {}
    order = [(v, m) for m in args.methods.split(",") for v in ("before", "after")]
    if len(order) == 4:  # after DLN-2 before before DLN-2: the DLN-2/DLN-1 ratio first if time runs out
        order[2], order[3] = order[3], order[2]
    try:
        for variant, method in order:
            root = roots[variant]
            spec_dir = work / f"{variant}-{method}"
            spec_dir.mkdir()
            spec = local_spec(root, SPECS[method], spec_dir)
            rows[f"{variant}_{method}"] = train(root, spec, work, f"{variant}-{method}")
            write(Path(args.out), base, after, rows)  # after every run, so a stopped run keeps its rows
    finally:
        for root in roots.values():
            git("worktree", "remove", "--force", str(root))
        shutil.rmtree(work, ignore_errors=True)
    print((Path(args.out) / "run_speed_navigate.md").read_text())


def write(out: Path, base: str, after: str, rows: dict[str, dict[str, Any]]) -> None:
    payload = {"machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "date": dt.date.today().isoformat(), "base": base[:12], "after": after[:12],
               "command": "python benchmarks/run_speed.py " + " ".join(sys.argv[1:]), "protocol": PROTOCOL,
               "split_sizes_changed": SPLIT,
               "runs": rows, "ratios": ratios(rows)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_speed_navigate.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "run_speed_navigate.md").write_text(markdown(payload))


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for method in ("dln1", "dln2"):
        b, a = rows.get(f"before_{method}"), rows.get(f"after_{method}")
        if b and a:
            out[f"{method}_speedup"] = round(b["wall_seconds"] / a["wall_seconds"], 2)
            if b.get("cpu_seconds") and a.get("cpu_seconds"):
                out[f"{method}_speedup_cpu"] = round(b["cpu_seconds"] / a["cpu_seconds"], 2)
    if "after_dln1" in rows and "after_dln2" in rows:
        out["after_dln2_over_dln1"] = round(rows["after_dln2"]["wall_seconds"] / rows["after_dln1"]["wall_seconds"], 2)
        if rows["after_dln1"].get("cpu_seconds") and rows["after_dln2"].get("cpu_seconds"):
            out["after_dln2_over_dln1_cpu"] = round(rows["after_dln2"]["cpu_seconds"]
                                                    / rows["after_dln1"]["cpu_seconds"], 2)
    if "before_dln1" in rows and "before_dln2" in rows:
        out["before_dln2_over_dln1"] = round(rows["before_dln2"]["wall_seconds"]
                                             / rows["before_dln1"]["wall_seconds"], 2)
    return out


def markdown(p: dict[str, Any]) -> str:
    lines = ["# Training speed before vs after: BBH navigate, DLN-1 and DLN-2", "",
             f"- machine: {p['machine']}", f"- date: {p['date']}", f"- command: `{p['command']}`",
             f"- before: commit {p['base']}; after: commit {p['after']}",
             f"- protocol: {', '.join(f'{k}={v}' for k, v in p['protocol'].items())}; fresh cache per run",
             f"- split sizes changed from the spec (both sides alike): {p['split_sizes_changed'] or 'none'}",
             "", "| run | train s | dev before → after | test before → after | backend calls | prompt tokens | "
             "generate calls | tokens generated | mean tokens / generation | load avg (start, end) | "
             "cpu s |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for name, r in p["runs"].items():
        m, g = r["metrics"], r["generation"]
        lines.append(f"| {name} | {r['wall_seconds']:.0f} | {m['dev_before']:.2f} → {m['dev']:.2f} | "
                     f"{m['test_before']:.2f} → {m['test']:.2f} | {r['backend_calls']} | {r['prompt_tokens']} | "
                     f"{g['generate_calls']} | {g['tokens_generated']} | {g['mean_tokens_per_generation']} | "
                     f"{r['load_average_1min'][0]}, {r['load_average_1min'][1]} | {r.get('cpu_seconds', '')} |")
    lines += ["", "Ratios: " + ", ".join(f"{k} = **{v}**" for k, v in p["ratios"].items()), ""]
    for name, r in p["runs"].items():
        t = r.get("timing")
        if not t:
            continue
        lines += [f"## Where the time went: {name}", "", "| operation | seconds | calls | tokens generated |",
                  "|---|---:|---:|---:|"]
        for op, s in t["operations"].items():
            lines.append(f"| {op} | {s['seconds']:.1f} | {s['calls']} | {s['tokens_generated']} |")
        lines.append(f"| other | {t.get('other_seconds', 0):.1f} | | |")
        pt = t.get("prompt_tokens") or {}
        lines += ["", f"Prompt tokens evaluated {pt.get('evaluated')}, reused from the KV cache "
                      f"{pt.get('reused')}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
