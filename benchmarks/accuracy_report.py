"""Markdown for the accuracy benchmark, rendered from its JSON results (rewritten after every row)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from accuracy_protocol import CALIBRATED, METHODS, PAPER, TASKS
from accuracy_runs import FINISHED

CALIBRATED_TWINS = tuple(n for n, m in METHODS.items()
                         if m.base in ("zero-shot", "few-shot") and m.sets == (CALIBRATED,))
"""Untrained rows that only add calibration: their calls are their plain row's (same task, same few-shot
draw), read from the cache."""
COST_KEYS = ("distinct_requests", "distinct_prompt_tokens", "distinct_completion_tokens", "backend_calls",
             "requests", "wall_seconds", "cpu_seconds")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}"


def by_cell(rows: list[dict[str, Any]], statuses: tuple[str, ...] = ("ok",)) -> dict[tuple[str, str], list]:
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") in statuses:
            cells[(r["task"], r["method"])].append(r)
    return cells


def accuracy_cell(rows: list[dict[str, Any]], key: str = "test") -> str:
    """``mean (seed a / seed b)`` in percent, seeds in order; DSPy compile failures say so."""
    failed = [r for r in rows if r.get("status") == "compile_failed"]
    rows = [r for r in rows if r.get("status") == "ok"]
    if failed:
        seeds = ", ".join(str(r["seed"]) for r in sorted(failed, key=lambda r: r["seed"]))
        note = f"compile failed (seed {seeds})"
        return note if not rows else f"{accuracy_cell(rows, key)}; {note}"
    if not rows:
        return "n/a"
    rows = sorted(rows, key=lambda r: r["seed"])
    values = [r[key] for r in rows]
    per_seed = " / ".join(pct(v) for v in values)
    return f"**{pct(statistics.fmean(values))}** ({per_seed})"


def majority(rows: list[dict[str, Any]], task: str) -> str:
    """The test accuracy of always answering the most common test label."""
    for r in rows:
        if r["task"] == task and r.get("test_targets"):
            counts = r["test_targets"]
            return pct(max(counts.values()) / sum(counts.values()))
    return "?"


def accuracy_table(rows: list[dict[str, Any]], methods: list[str]) -> list[str]:
    cells = by_cell(rows, FINISHED)
    head = ["task", "majority label", *[METHODS[m].label for m in methods], "paper 0-shot", "paper DLN-1",
            "paper DLN-2"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in TASKS:
        paper = PAPER[task]
        line = [task, majority(rows, task), *[accuracy_cell(cells.get((task, m), [])) for m in methods],
                *[("-" if paper[k] is None else f"{paper[k]:.1f}") for k in ("0-shot", "dln1", "dln2")]]
        out.append("| " + " | ".join(line) + " |")
    return out


def cost_table(rows: list[dict[str, Any]], methods: list[str]) -> list[str]:
    cells = by_cell(rows, FINISHED)
    out = ["| task | method | runs | own requests | own prompt tok | own completion tok | real calls | "
           "requests incl. repeats | wall s | CPU s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task in TASKS:
        for m in methods:
            got = cells.get((task, m), [])
            if not got:
                continue
            mean = {k: statistics.fmean(float(r.get(k) or 0) for r in got) for k in COST_KEYS}
            cpu = f"{mean['cpu_seconds']:.0f}" if all("cpu_seconds" in r for r in got) else "-"
            out.append(f"| {task} | {METHODS[m].label} | {len(got)} | {mean['distinct_requests']:.0f} | "
                       f"{mean['distinct_prompt_tokens']:.0f} | {mean['distinct_completion_tokens']:.0f} | "
                       f"{mean['backend_calls']:.0f} | {mean['requests']:.0f} | {mean['wall_seconds']:.0f} | "
                       f"{cpu} |")
    return out


def dspy_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| task | method | seed | test acc | unparsed | off-label | "
           "un-optimised: acc / unparsed / off-label | failed compile attempts | "
           "adapter parse failures / parses | learned instruction |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if METHODS[r["method"]].variant != "dspy" or "parse" not in r:
            continue
        p = r["parse"]
        fails = ", ".join(f"{k} {v}/{p.get('adapter_parses', {}).get(k, 0)}"
                          for k, v in sorted(p.get("adapter_parse_failures", {}).items()))
        test = p.get("test")
        unparsed = f"{test['parse_failures']}/{test['n']}" if test else "-"
        off = f"{test['off_label']}/{test['n']}" if test else "-"
        before = p["test_before"]
        errors = p.get("compile_errors", r.get("compile_errors", []))
        attempts = p.get("compile_attempts", "?")
        if r["status"] not in FINISHED:
            attempts = f"{attempts} ({r['status']} in phase {r.get('phase')})"
        text = (r.get("prompts") or {}).get("instruction") or f"(none: {r['status']})"
        text = text.replace("\n", " ").replace("|", "/")
        out.append(f"| {r['task']} | {METHODS[r['method']].label} | {r['seed']} | {pct(r['test'])} | "
                   f"{unparsed} | "
                   f"{off} | {pct(r['test_before'])} / {before['parse_failures']}/{before['n']} / "
                   f"{before['off_label']}/{before['n']} | "
                   f"{len(errors)}/{attempts} | {fails or '-'} | {text[:90]} |")
    return out


def compile_errors(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        for err in (r.get("parse") or {}).get("compile_errors", r.get("compile_errors", [])):
            seen[err[:160]].append(f"{r['task']}/{r['method']}/{r['seed']}")
    return [f"- {len(where)}x `{err}` ({', '.join(where[:6])}{' ...' if len(where) > 6 else ''})"
            for err, where in sorted(seen.items(), key=lambda kv: -len(kv[1]))] or ["- none"]


def predictions(rows: list[dict[str, Any]]) -> list[str]:
    """Per task: the test labels, and what each DLN row predicted on the test set."""
    out = []
    for task in TASKS:
        got = [r for r in rows if r["task"] == task and r.get("test_predictions")]
        if not got:
            continue
        targets = ", ".join(f"{k} {v}" for k, v in sorted(got[0]["test_targets"].items()))
        out.append(f"- **{task}** (test labels: {targets})")
        for r in got:
            ranked = sorted(r["test_predictions"].items(), key=lambda kv: -kv[1])
            preds = ", ".join(f"{k} {v}" for k, v in ranked)
            out.append(f"  - {METHODS[r['method']].label}, seed {r['seed']}: {preds}")
    return out or ["- no label counts recorded yet (`--annotate` adds them)"]


def consistency(rows: list[dict[str, Any]]) -> list[str]:
    """Check that every row of a task saw the same test split, and one-layer rows the same 0-shot."""
    out = []
    tests: dict[str, set[str]] = defaultdict(set)
    zero: dict[str, set[float]] = defaultdict(set)
    for r in rows:
        if r.get("status") != "ok":
            continue
        tests[r["task"]].add(r["splits"]["test"])
        if METHODS[r["method"]].variant == "" and not METHODS[r["method"]].sets:  # calibration changes it
            zero[r["task"]].add(r["test_before"])
    for task in TASKS:
        if task in tests:
            out.append(f"- {task}: {len(tests[task])} distinct test split(s) across rows; "
                       f"one-layer 0-shot test accuracy across rows without extra settings: "
                       f"{sorted(pct(v) for v in zero[task])}")
    return out


def run_time(rows: list[dict[str, Any]]) -> list[str]:
    """Total wall and CPU time of the finished rows, and how much of their work the cache served."""
    dln = [r for r in rows if r.get("status") == "ok" and METHODS[r["method"]].variant != "dspy"]
    dspy = [r for r in rows if r.get("status") in FINISHED and METHODS[r["method"]].variant == "dspy"]
    timed = [r for r in dln if "cpu_seconds" in r]
    own = sum(r.get("distinct_prompt_tokens", 0) for r in dln)
    real = sum(r["prompt_tokens"] for r in dln)
    zero_real = {(r["task"], r["method"]) for r in dln if r["backend_calls"] > 0}
    twins = [r for r in dln if r["backend_calls"] == 0 and r["method"] in CALIBRATED_TWINS]
    replayed = [f"{r['task']}/{r['method']}/{r['seed']}" for r in dln if r["backend_calls"] == 0
                and r["method"] not in CALIBRATED_TWINS
                and (r["method"] != "zero-shot" or (r["task"], r["method"]) not in zero_real)]
    threads = sorted({str(r.get("threads") or "default") for r in dln})
    wall = sum(r["wall_seconds"] for r in dln) / 60
    cpu = sum(r["cpu_seconds"] for r in timed) / 60
    share = 100 * real / own if own else 0.0
    reused = [f"- calibrated 0-shot and few-shot rows with no real calls: {len(twins)} (they reuse the class "
              "probabilities their plain row paid for; calibration is arithmetic on them)"] if twins else []
    return [
        f"- DLN rows: {len(dln)}; wall {wall:.0f} min in total on the shared machine; CPU {cpu:.0f} min "
        f"of one core over the {len(timed)} rows that record it (model threads: {', '.join(threads)})",
        f"- prompt tokens the DLN rows asked for (own, summed over rows): {own}; evaluated for real: {real} "
        f"({share:.0f}%); the rest came from the cache (the 0-shot evaluation of a task is shared by all its "
        "rows, and identical calls recur across seeds and methods)",
        *reused,
        "- other rows computed by an earlier, interrupted invocation (no real calls here, so their time and "
        f"real calls say nothing): {', '.join(replayed) or 'none'}",
        f"- DSPy rows: {len(dspy)}, wall {sum(r['wall_seconds'] for r in dspy) / 60:.0f} min in total",
    ]


def missing(doc: dict[str, Any]) -> list[str]:
    done = {k for k, r in doc["rows"].items() if r.get("status") in FINISHED}
    out = []
    for key in sorted(set(doc.get("planned", [])) - done):
        row = doc["rows"].get(key)
        why = f"{row['status']}: {row.get('error', '')[-300:].strip()}" if row else "not run (yet)"
        out.append(f"- `{key}`: {why}")
    return out or ["- none: every planned row finished"]


def render(doc: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    proto = doc["protocol"]
    methods = [m for m in METHODS if any(r["method"] == m and r.get("status") in FINISHED for r in rows)]
    lines = [
        "# Accuracy: DLN-1 and DLN-2 against 0-shot, few-shot, APE and DSPy on the embedded model",
        "",
        f"- last update: {doc['updated']}",
        f"- command of the last run: `{doc['command']}`",
        f"- machine: {doc['machine']}",
        f"- load average (1 min) at the start of the last run: {doc.get('load_start')} "
        "(on 2 cores; above ~2 the machine was shared with other work)",
        f"- model: {doc['model']}",
        f"- protocol `{proto['name']}`: split train/dev/test = {proto['split']} "
        f"(per-task overrides {proto['split_by_task'] or 'none'}), split seed fixed by each spec (42); "
        f"training seeds of the rows: {sorted({r['seed'] for r in rows}) or doc['seeds']}",
        "",
        "Test accuracy in percent: **mean over seeds** (each seed). The same train/dev/test examples are",
        "used by every method of a task; only the training seed changes between runs. 0-shot is the",
        "spec's initial prompt (it equals every one-layer run's `test_before`). DLN-2's own starting",
        "point (two layers, initial prompts) is in the JSON as `test_before` of the DLN-2 rows.",
        "",
        *accuracy_table(rows, methods),
        "",
        "The paper columns are the DLN paper's numbers with text-davinci-003, a far larger model, on",
        "its own splits (BBH train/dev from BIG-bench); they are there for orientation only and are not",
        "comparable with the 270M model's numbers here.",
        "",
        "## Settings",
        "",
        *[f"- {m}: `{s}`" for m, s in proto["settings"].items()],
        f"- DLN-2 hidden layer generation capped at {proto['hidden_max_tokens']} tokens"
        if proto["hidden_max_tokens"] else "- DLN-2 hidden layer: the spec's max_tokens",
        *[f"- DSPy {m}: `{s}`" for m, s in proto["dspy"].items()],
        f"- DSPy time cap per row: {proto['dspy_time_cap']:.0f} s",
        "",
        "## Budget per run (mean over seeds)",
        "",
        "*Own* columns count each different request of the run once, with its tokens: what the method",
        "costs on an empty cache, whatever ran before it; compare methods on these. *Real calls* are",
        "the cache misses of this run (they depend on what earlier rows or runs left in the shared",
        "cache); *requests incl. repeats* counts every request, cache hits and repeats within the run",
        "included (the trainer evaluates the chosen prompts again at the end). Every DLN row includes",
        "its 0-shot evaluation of dev and test (shared by all rows of a task); DSPy rows include the",
        "un-optimised program's test evaluation and, when its parser fails, DSPy's retry with its JSON",
        "adapter. CPU s is the process's CPU time (the DLN rows; DSPy's work runs in the server).",
        "",
        *cost_table(rows, methods),
        "",
        "## DSPy: parse failures",
        "",
        "Unparsed answers count as wrong. *Adapter parse failures* counts every parser failure inside",
        "DSPy (its chat adapter falls back to its JSON adapter, one more call, before giving up).",
        "",
        *dspy_table(rows),
        "",
        "Errors that stopped an optimizer (each attempt retried with fresh proposal samples):",
        "",
        *compile_errors(rows),
        "",
        "## Predictions by label",
        "",
        "A 270M model often answers one label for every input; these counts show when a method's",
        "accuracy is just the share of that label.",
        "",
        *predictions(rows),
        "",
        "## Checks",
        "",
        *consistency(rows),
        "",
        "## Run time",
        "",
        *run_time(rows),
        "",
        "## Missing or failed rows",
        "",
        *missing(doc),
        "",
    ]
    return "\n".join(lines)
