"""Markdown of the ``medium`` protocol: per task, every row's accuracy against 0-shot and few-shot
with paired bootstrap intervals, the labels it predicted, and a summary of wins.

The *best dlnflow configuration* of a task is chosen among :data:`CONFIG_ROWS` (every row but plain
0-shot and plain few-shot) by its mean **dev** accuracy over seeds, never by test accuracy, so its
test interval is not inflated by the choice. The row best on test is shown beside it, marked as
chosen on test.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from accuracy_protocol import METHODS, TASKS
from accuracy_report import consistency, cost_table, missing, pct, run_time
from accuracy_stats import Interval, correct_table, counts_text, paired_bootstrap

ZERO, FEW = "zero-shot", "few-shot"
CONFIG_ROWS = ("zero-shot-cal", "few-shot-cal", "dln1", "dln1-cal", "dln1-demos-cal", "dln2-cal")
SEED_FREE = (ZERO, "zero-shot-cal")  # rows whose result does not depend on the training seed
GOALS = {ZERO: 5, FEW: 4}  # issue 14: tasks (of 8) on which the best configuration must win


@dataclass
class Cell:
    """One row kind of one task: its runs (seed order) and their outcomes on the shared test set."""

    method: str
    runs: list[dict[str, Any]]

    @property
    def seeds(self) -> list[int]:
        return [r["seed"] for r in self.runs]

    def table(self, gold: list[str]) -> Any:
        return correct_table([r["test_predicted"] for r in self.runs], gold)

    def mean(self, key: str) -> float:
        return statistics.fmean(r[key] for r in self.runs)

    def test_mean(self, gold: list[str]) -> float:
        return float(self.table(gold).mean())


def cells_of(rows: list[dict[str, Any]], task: str) -> dict[str, Cell]:
    """The finished rows of ``task`` that kept their test predictions, by method."""
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["task"] == task and r.get("status") == "ok" and r.get("test_predicted") is not None:
            got[r["method"]].append(r)
    return {m: Cell(m, sorted(rs, key=lambda r: r["seed"])) for m, rs in got.items()}


def compare(cell: Cell, base: Cell | None, gold: list[str]) -> Interval | None:
    """``cell`` minus ``base`` on the same test examples, seed by seed.

    A seed-free base (0-shot) pairs with every seed; otherwise only common seeds are paired.
    """
    if base is None:
        return None
    by_seed = {r["seed"]: r for r in base.runs}
    if base.method in SEED_FREE:
        pairs = [(r, by_seed.get(r["seed"], base.runs[0])) for r in cell.runs]
    else:
        pairs = [(r, by_seed[r["seed"]]) for r in cell.runs if r["seed"] in by_seed]
    if not pairs:
        return None
    a = correct_table([p["test_predicted"] for p, _ in pairs], gold)
    b = correct_table([q["test_predicted"] for _, q in pairs], gold)
    return paired_bootstrap(a, b)


def per_seed_diffs(cell: Cell, base: Cell | None, gold: list[str]) -> str:
    if base is None:
        return "-"
    by_seed = {r["seed"]: r for r in base.runs}
    out = []
    for r in cell.runs:
        other = by_seed.get(r["seed"], base.runs[0] if base.method in SEED_FREE else None)
        if other is not None:
            a = correct_table([r["test_predicted"]], gold).mean()
            b = correct_table([other["test_predicted"]], gold).mean()
            out.append(f"{100 * (a - b):+.0f}")
    return " / ".join(out) or "-"


def labels_text(cell: Cell) -> str:
    texts = [counts_text(r["test_predicted"]) for r in cell.runs]
    if len(set(texts)) == 1:
        return texts[0] + (" (every seed)" if len(texts) > 1 else "")
    return "; ".join(f"s{r['seed']}: {t}" for r, t in zip(cell.runs, texts, strict=True))


def gold_of(cells: dict[str, Cell]) -> list[str] | None:
    for cell in cells.values():
        return list(cell.runs[0]["test_gold"])
    return None


def task_table(cells: dict[str, Cell], gold: list[str], order: list[str]) -> list[str]:
    out = ["| row | seeds | test % mean (per seed) | dev % mean | vs 0-shot: diff [95% CI] | per seed | "
           "vs few-shot: diff [95% CI] | predicted labels |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for m in order:
        cell = cells.get(m)
        if cell is None:
            continue
        per_seed = " / ".join(pct(v) for v in cell.table(gold).mean(axis=1))
        zero = compare(cell, cells.get(ZERO), gold) if m != ZERO else None
        few = compare(cell, cells.get(FEW), gold) if m not in (ZERO, FEW) else None
        out.append(f"| {METHODS[m].label} | {','.join(map(str, cell.seeds))} | "
                   f"**{100 * cell.test_mean(gold):.1f}** ({per_seed}) | {100 * cell.mean('dev'):.1f} | "
                   f"{zero.text() if zero else '-'} | "
                   f"{per_seed_diffs(cell, cells.get(ZERO), gold) if m != ZERO else '-'} | "
                   f"{few.text() if few else '-'} | {labels_text(cell)} |")
    return out


@dataclass
class Best:
    task: str
    method: str
    dev: float
    test: float
    zero: Interval | None
    few: Interval | None


def best_config(cells: dict[str, Cell], gold: list[str], task: str, key: str = "dev") -> Best | None:
    """The configuration with the highest mean ``key`` accuracy (``dev``: the fair choice)."""
    options = [cells[m] for m in CONFIG_ROWS if m in cells]
    if not options:
        return None
    score = (lambda c: c.mean("dev")) if key == "dev" else (lambda c: c.test_mean(gold))
    cell = max(options, key=score)  # ties: the earlier (cheaper) row in CONFIG_ROWS
    return Best(task, cell.method, cell.mean("dev"), cell.test_mean(gold),
                compare(cell, cells.get(ZERO), gold), compare(cell, cells.get(FEW), gold))


def summary(rows: list[dict[str, Any]]) -> list[str]:
    bests: list[Best] = []
    on_test: dict[str, Best] = {}
    for task in TASKS:
        cells = cells_of(rows, task)
        gold = gold_of(cells)
        if gold is None:
            continue
        found = best_config(cells, gold, task)
        if found is not None:
            bests.append(found)
            chosen_on_test = best_config(cells, gold, task, key="test")
            if chosen_on_test is not None:
                on_test[task] = chosen_on_test
    if not bests:
        return ["- no finished rows with test predictions yet"]
    out = ["| task | best configuration (by dev) | dev % | test % | vs 0-shot [95% CI] | vs few-shot [95% CI] | "
           "best on test (optimistic) |", "|---|---|---:|---:|---:|---:|---|"]
    for b in bests:
        t = on_test[b.task]
        out.append(f"| {b.task} | {METHODS[b.method].label} | {100 * b.dev:.1f} | {100 * b.test:.1f} | "
                   f"{b.zero.text() if b.zero else '-'} | {b.few.text() if b.few else '-'} | "
                   f"{METHODS[t.method].label} {100 * t.test:.1f} |")
    out.append("")
    for base, label in ((ZERO, "0-shot"), (FEW, "few-shot")):
        wins = [b.task for b in bests if (b.zero if base == ZERO else b.few) is not None
                and (b.zero if base == ZERO else b.few).above_zero]  # type: ignore[union-attr]
        compared = [b.task for b in bests if (b.zero if base == ZERO else b.few) is not None]
        goal = GOALS[base]
        verdict = "met" if len(wins) >= goal and len(compared) == len(TASKS) else (
            "not met" if len(compared) == len(TASKS) else "not decided: tasks missing")
        out.append(f"- best configuration beats plain {label} with the paired 95% CI above zero on "
                   f"**{len(wins)} of {len(compared)}** tasks with results ({', '.join(wins) or 'none'}); "
                   f"goal {goal} of {len(TASKS)}: {verdict}")
    return out


def replay_check(rows: list[dict[str, Any]]) -> list[str]:
    """Rows whose kept test predictions do not give the test accuracy the trainer reported (the
    predictions are a replay of the final evaluation: they must agree)."""
    off = []
    for r in rows:
        if r.get("status") == "ok" and r.get("test_predicted") is not None and r.get("test") is not None:
            right = sum(p == g for p, g in zip(r["test_predicted"], r["test_gold"], strict=True))
            if abs(right / max(1, len(r["test_gold"])) - r["test"]) > 1e-6:
                off.append(f"{r['task']}/{r['method']}/{r['seed']}")
    return [f"- rows whose kept predictions disagree with their test accuracy: {', '.join(off) or 'none'}"]


def render_medium(doc: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    proto = doc["protocol"]
    present = {r["method"] for r in rows}
    order = [m for m in dict.fromkeys([*proto["rows"], *METHODS]) if m in present]
    lines = [
        "# Accuracy, medium protocol: which methods beat 0-shot and few-shot, with paired intervals",
        "",
        f"- last update: {doc['updated']}",
        f"- command of the last run: `{doc['command']}`",
        f"- machine: {doc['machine']}; load average (1 min) at the start of the last run: {doc.get('load_start')}",
        f"- model: {doc['model']}",
        f"- split train/dev/test = {proto['split']}, per task {proto['split_by_task'] or 'none'}; split seed "
        f"fixed by each spec (42); training seeds: {sorted({r['seed'] for r in rows}) or doc['seeds']}",
        "",
        "Differences are in accuracy points, method minus baseline on the same test examples: the mean",
        "over seeds, with the 95% paired bootstrap interval (10,000 resamples of test examples, fixed",
        "seed; `benchmarks/accuracy_stats.py`). *Per seed* lists each seed's own difference. 0-shot does",
        "not depend on the seed (every seed pairs with it); few-shot draws its examples with the seed,",
        "so a row is paired with few-shot of the same seed.",
        "",
        "## Summary",
        "",
        "The best configuration of a task is chosen among the rows other than plain 0-shot and plain",
        "few-shot by mean dev accuracy (test plays no part in the choice); *best on test* is shown for",
        "information only (choosing on test inflates it).",
        "",
        *summary(rows),
        "",
    ]
    for task in TASKS:
        cells = cells_of(rows, task)
        gold = gold_of(cells)
        if gold is None:
            continue
        targets = counts_text(gold)
        lines += [f"## {task}", "", f"Test labels ({len(gold)} examples): {targets}", "",
                  *task_table(cells, gold, order), ""]
    lines += [
        "## Settings", "",
        *[f"- {m}: `{s}`" for m, s in proto["settings"].items()],
        *[f"- {METHODS[m].label}: base `{METHODS[m].settings_of}` with `--set` "
          + ", ".join(f"{k}={v}" for k, v in METHODS[m].sets) for m in proto["rows"] if METHODS[m].sets],
        f"- DLN-2 hidden layer generation capped at {proto['hidden_max_tokens']} tokens", "",
        "## Budget per run (mean over seeds)", "",
        "Columns as in `accuracy.md`: *own* counts each different request of a run once (its cost on an",
        "empty cache); *real calls* are this run's cache misses.", "",
        *cost_table(rows, order), "",
        "## Checks", "", *consistency(rows), *replay_check(rows), "",
        "## Run time", "", *run_time(rows), "",
        "## Missing, unavailable or failed rows", "", *missing(doc), "",
    ]
    return "\n".join(lines)
