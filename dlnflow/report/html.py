"""Run reports as one self-contained HTML file (``dlnflow report RUN_OR_SPEC --html OUT.html``).

The page needs nothing but itself: the learning curve is an SVG inlined as a ``data:`` URI, the
styles are inline, there is no script, and a Content-Security-Policy forbids loading anything
else. It shows, per run: the learning curve; accuracy before and after; every iteration's
candidate prompts with their scores and the chosen one; a word diff of the chosen prompt against
the previous one; how often each label was predicted on dev and test; calls, tokens, cache hits
and cost; and a ``timing`` block when the summary has one. For a sweep (a spec with
``experiments``) it adds one table of all runs (seed x settings, mean and confidence interval per
grid point) linking to each run's section, and two runs side by side.

The HTML is written by Jinja2 with autoescaping on: prompts, labels and file names are data,
never markup.

>>> [(op, text) for op, text in word_diff("say red or blue", "say blue or red")]
[('same', 'say '), ('del', 'red'), ('ins', 'blue'), ('same', ' or '), ('del', 'blue'), ('ins', 'red')]
"""

from __future__ import annotations

import base64
import difflib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined

from dlnflow._util.files import write_atomic
from dlnflow.core.errors import InputError
from dlnflow.experiments.aggregate import best_point, group_points
from dlnflow.experiments.matrix import matrix_for
from dlnflow.report.markdown import (
    RunReport,
    is_run_dir,
    learning_curve_figure,
    load_run,
    pct,
    read_records,
    read_summary,
    resolve_run,
)
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.overrides import apply_overrides, point_label
from dlnflow.training.runs import run_dir_for

TEMPLATE = Path(__file__).with_name("report.html.j2")
FOLD_AT = 240
"""Prompts longer than this many characters are folded (``<details>``)."""
SPLITS = ("dev_before", "dev", "test_before", "test")
SPLIT_TITLES = {"dev_before": "dev, before", "dev": "dev, after", "test_before": "test, before",
                "test": "test, after"}


def word_diff(old: str, new: str) -> list[tuple[str, str]]:
    """``(op, text)`` pieces turning ``old`` into ``new`` word by word; ``op`` is same, del or ins.

    Changes separated only by whitespace are joined, so a rewritten sentence reads as one
    deletion and one insertion rather than alternating words.
    """
    a, b = re.split(r"(\s+)", old), re.split(r"(\s+)", new)
    groups: list[list[int]] = []  # [i1, i2, j1, j2, changed]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        changed = op != "equal"
        blank = not changed and not "".join(a[i1:i2]).strip()
        if groups and groups[-1][4] and (changed or blank):
            groups[-1][1], groups[-1][3] = i2, j2  # extend the open change
            continue
        groups.append([i1, i2, j1, j2, int(changed)])
    out: list[tuple[str, str]] = []
    for i1, i2, j1, j2, changed in groups:
        if not changed:
            out.append(("same", "".join(a[i1:i2])))
            continue
        out += [("del", "".join(a[i1:i2])), ("ins", "".join(b[j1:j2]))]
    return [(op, text) for op, text in out if text]


@dataclass
class Candidate:
    prompt: str
    score: float | None
    chosen: bool


@dataclass
class LayerStep:
    """One layer in one iteration: its candidates, the chosen one and the diff against the previous prompt."""

    layer: str
    candidates: list[Candidate]
    objective: float | None
    diff: list[tuple[str, str]]
    changed: bool


@dataclass
class Step:
    iteration: int
    batch_accuracy: float | None
    dev: float | None
    layers: list[LayerStep]
    calls: int


@dataclass
class RunView:
    """Everything the page shows of one run."""

    report: RunReport
    anchor: str
    curve: str
    steps: list[Step]
    labels: list[str]
    label_counts: dict[str, dict[str, int]]
    usage_rows: list[tuple[str, str]]
    timing: list[tuple[str, str]]
    seed: int | None = None
    settings: str = ""
    best_iteration: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _anchor(run_id: str) -> str:
    return "run-" + re.sub(r"[^A-Za-z0-9_-]", "-", run_id)


def curve_data_uri(report: RunReport) -> str:
    """The learning curve as an inline SVG ``data:`` URI (an ``<img>`` keeps its ids to itself).

    Text stays text (``svg.fonttype: none``) and ids are salted with the run id, so the same run
    always gives the same bytes.
    """
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": report.run_id}):
        learning_curve_figure(report).savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _prompt_key(state: dict[str, Any], layer: str) -> str | None:
    for key in (layer, f"{layer}.prompt"):
        if key in state:
            return str(state[key])
    return None


def _steps(records: list[dict[str, Any]]) -> list[Step]:
    previous: dict[str, Any] = {}
    steps: list[Step] = []
    for record in records:
        state = record.get("prompts") if isinstance(record.get("prompts"), dict) else {}
        if record.get("event") == "step":
            steps.append(_step(record, previous))
        if state:
            previous = state
    return steps


def _step(record: dict[str, Any], previous: dict[str, Any]) -> Step:
    layers = []
    for name, info in sorted((record.get("layers") or {}).items()):
        if not isinstance(info, dict):
            continue
        chosen = info.get("chosen")
        cands = [Candidate(str(c.get("prompt", "")), c.get("score"), i == chosen)
                 for i, c in enumerate(info.get("candidates") or []) if isinstance(c, dict)]
        old = _prompt_key(previous, name) or ""
        new = next((c.prompt for c in cands if c.chosen), _prompt_key(record.get("prompts") or {}, name) or old)
        layers.append(LayerStep(name, cands, info.get("objective"), word_diff(old, new), old != new))
    usage = record.get("usage") or {}
    dev = record.get("dev") if isinstance(record.get("dev"), int | float) else None
    batch = record.get("batch_accuracy") if isinstance(record.get("batch_accuracy"), int | float) else None
    return Step(int(record["iteration"]), batch, dev, layers, int(usage.get("backend_calls", 0)))


def _usage_rows(report: RunReport, summary: dict[str, Any] | None) -> list[tuple[str, str]]:
    u = report.usage
    requests = u.get("backend_calls", 0) + u.get("cache_hits", 0)
    rate = f" ({pct(u.get('cache_hits', 0) / requests)} of requests)" if requests else ""
    cost = (summary or {}).get("cost")
    rows = [("backend calls (real model calls)", f"{u.get('backend_calls', 0):,}"),
            ("cache hits", f"{u.get('cache_hits', 0):,}{rate}"),
            ("prompt tokens", f"{u.get('prompt_tokens', 0):,}"),
            ("completion tokens", f"{u.get('completion_tokens', 0):,}"),
            ("tokens saved by the cache", f"{report.tokens_saved:,}"),
            ("cost", f"{cost:.4f}" if isinstance(cost, int | float) else "— (no models.<name>.price in the spec)")]
    if report.wall_seconds is not None:
        rows.append(("wall time", f"{report.wall_seconds:.1f} s"))
    return rows


def _timing(summary: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Rows of a ``timing`` block (seconds per operation), nested keys joined by dots."""
    block = (summary or {}).get("timing")
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            rows.append((prefix, f"{value:.3f}"))
        else:
            rows.append((prefix, str(value)))

    if isinstance(block, dict):
        walk("", block)
    return rows


def run_view(run_dir: Path, seed: int | None = None, settings: str = "") -> RunView:
    """Read one run folder into what the page shows."""
    report = load_run(run_dir)
    records, _ = read_records(run_dir)
    summary = read_summary(run_dir) if report.finished else None
    counts = (summary or {}).get("label_counts") or {}
    counts = {k: v for k, v in counts.items() if k in SPLITS and isinstance(v, dict)}
    labels = sorted({label for c in counts.values() for label in c},
                    key=lambda lab: (-sum(c.get(lab, 0) for c in counts.values()), lab))
    if seed is None and summary is not None:
        seed = (summary.get("config") or {}).get("seed")
    return RunView(report, _anchor(report.run_id), curve_data_uri(report), _steps(records), labels, counts,
                   _usage_rows(report, summary), _timing(summary), seed, settings, report.best_iteration,
                   report.metrics)


# -- sweeps ------------------------------------------------------------------------------------------
@dataclass
class PointRow:
    label: str
    seeds: str
    cells: dict[str, str]
    best: bool


@dataclass
class SweepView:
    name: str
    spec: str
    points: list[PointRow]
    runs: list[RunView]
    missing: list[str]
    compare: tuple[RunView, RunView] | None
    confidence: int


def _sweep_runs(spec: Path) -> tuple[Any, list[tuple[Any, Path]]]:
    base = compile_spec(spec)
    matrix, is_sweep = matrix_for(base)
    if not is_sweep:
        raise InputError(f"{spec} has no experiments section, so it is not a sweep")
    runs = []
    for point in matrix.runs():
        pipeline = apply_overrides(base, point.overrides)
        runs.append((point, run_dir_for(pipeline, point.overrides)))
    return base, runs


def _pick_pair(views: list[RunView], compare: tuple[str, str] | None) -> tuple[RunView, RunView] | None:
    by_id = {v.report.run_id: v for v in views}
    if compare is not None:
        unknown = [c for c in compare if c not in by_id]
        if unknown:
            raise InputError(f"--compare: no run {', '.join(unknown)} in this sweep; "
                             f"its runs are {', '.join(sorted(by_id)) or '(none finished)'}")
        return by_id[compare[0]], by_id[compare[1]]
    ranked = sorted((v for v in views if "dev" in v.metrics), key=lambda v: -v.metrics["dev"])
    return (ranked[0], ranked[1]) if len(ranked) >= 2 else None


def sweep_view(spec: Path, compare: tuple[str, str] | None = None) -> SweepView:
    """Every run of the sweep ``spec`` describes (finished or not), with the per-point summary."""
    base, runs = _sweep_runs(spec)
    return sweep_view_of(base.name, spec.name, runs, compare)


def sweep_view_of(name: str, spec_name: str, runs: list[tuple[Any, Path]],
                  compare: tuple[str, str] | None = None) -> SweepView:
    """The sweep of ``(RunPoint, run folder)`` pairs (finished or not), with the per-point summary."""
    views, missing, rows = [], [], []
    for point, run_dir in runs:
        if is_run_dir(run_dir):
            view = run_view(run_dir, point.seed, point_label(point.settings))
            views.append(view)
            metrics = view.metrics if view.report.finished else None
        else:
            missing.append(f"seed {point.seed}, {point_label(point.settings)}")
            metrics = None
        rows.append((dict(point.settings), point.seed, metrics))
    points = group_points(rows)
    best = best_point(points)
    confidence = next((s.confidence for p in points for s in p.metrics.values()), 0.95)
    table = [PointRow(point_label(p.settings), ", ".join(map(str, p.seeds))
                      + (f" (missing {', '.join(map(str, p.missing))})" if p.missing else ""),
                      {m: p.metrics[m].text() if m in p.metrics else "—" for m in SPLITS}, i == best)
             for i, p in enumerate(points)]
    return SweepView(name, spec_name, table, views, missing, _pick_pair(views, compare), round(confidence * 100))


# -- rendering ---------------------------------------------------------------------------------------
def _environment() -> Any:
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = pct
    env.filters["score"] = lambda x: "—" if x is None else f"{x:.3f}"
    return env


def render_html(runs: list[RunView], sweep: SweepView | None = None, title: str | None = None) -> str:
    """The page for ``runs`` (one, or a sweep's)."""
    env = _environment()
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    heading = title or (f"Sweep: {sweep.name}" if sweep else f"Training run: {runs[0].report.name}")
    return template.render(runs=runs, sweep=sweep, title=heading, fold_at=FOLD_AT, splits=SPLITS,
                           split_titles=SPLIT_TITLES)


def render_run_html(run_dir: Path) -> str:
    """The page of one run folder."""
    return render_html([run_view(run_dir)])


def render_sweep_html(view: SweepView) -> str:
    """The page of a sweep."""
    return render_html(view.runs, view)


def is_sweep_spec(target: Path) -> bool:
    """Whether ``target`` is a spec file with an ``experiments`` section."""
    if target.is_dir() or not target.is_file():
        return False
    pipeline = compile_spec(target)
    return bool(pipeline.experiments.seeds or pipeline.experiments.grid)


def write_html_report(target: Path, out: Path, seed: int | None = None, iterations: int | None = None,
                      compare: tuple[str, str] | None = None) -> dict[str, Any]:
    """Write the page for ``target`` (a run folder, a spec, or a sweep's spec) to ``out``.

    Returns what was written: ``{"html": path, "runs": [run ids], "sweep": bool}``.
    """
    sweep = seed is None and iterations is None and is_sweep_spec(target)
    if sweep:
        view = sweep_view(target, compare)
        if not view.runs:
            raise InputError(f"no run of the sweep in {target} has started yet; train first: dlnflow train {target}")
        html, ids = render_html(view.runs, view), [v.report.run_id for v in view.runs]
    else:
        if compare is not None:
            raise InputError("--compare picks two runs of a sweep; give the sweep's spec")
        view_one = run_view(resolve_run(target, seed, iterations))
        html, ids = render_html([view_one]), [view_one.report.run_id]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, html, mode=0o644)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}; choose another path for --html") from exc
    return {"html": str(out), "runs": ids, "sweep": sweep}
