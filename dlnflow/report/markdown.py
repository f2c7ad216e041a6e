"""Run reports: what one training run did, as markdown and a learning-curve picture.

A run folder (``runs/<name>/<run id>/``, see :mod:`dlnflow.training.runs`) holds ``log.jsonl``, one
record per iteration, and ``summary.json`` once the run has finished. :func:`load_run` reads
both into a :class:`RunReport`; :func:`render_markdown` writes it for people (prompts per
layer before and after, every validation point, dev/test before and after, calls, tokens and
tokens the cache saved); :func:`plot_learning_curve` draws dev accuracy at the validation points
above the training objective of each layer per iteration. A run that is still going (or was
killed) has only ``log.jsonl.partial``; its report says so and shows what was logged.

>>> from dlnflow.report.markdown import markdown_fence
>>> markdown_fence("no backticks here"), markdown_fence("a ``` fence inside")
('```', '````')
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dlnflow.core.errors import DataError, InputError, LockError, Problem
from dlnflow.data.dataset import load_dataset
from dlnflow.graph.demos import parse_demos
from dlnflow.runtime.timing import timing_markdown
from dlnflow.spec.compiler import compile_spec
from dlnflow.training.runs import SUMMARY, run_dir_for

LOG_NAME = "log.jsonl"
PARTIAL_LOG_NAME = "log.jsonl.partial"
REPORT_NAME = "report.md"
CURVE_NAME = "learning_curve.png"
USAGE_KEYS = ("backend_calls", "cache_hits", "prompt_tokens", "completion_tokens",
              "saved_prompt_tokens", "saved_completion_tokens")
EVENT_NOTES = {"before": "initial prompts", "prepared": "after the baseline's setup"}


@dataclass(frozen=True)
class ValidationPoint:
    """One evaluation on dev: after ``iteration`` steps (0: before training)."""

    iteration: int
    dev: float
    event: str = "step"


@dataclass
class RunReport:
    """Everything a report shows, read from one run folder."""

    name: str
    run_id: str
    run_dir: Path
    finished: bool
    validation: list[ValidationPoint] = field(default_factory=list)
    objectives: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    batch_accuracy: list[tuple[int, float]] = field(default_factory=list)
    prompts_before: dict[str, str] = field(default_factory=dict)
    prompts_after: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    iterations_run: int = 0
    best_iteration: int | None = None
    wall_seconds: float | None = None
    stop_message: str | None = None
    timing: dict[str, Any] | None = None

    @property
    def tokens_saved(self) -> int:
        """Prompt plus completion tokens the cache answered instead of a model."""
        return self.usage.get("saved_prompt_tokens", 0) + self.usage.get("saved_completion_tokens", 0)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what ``dlnflow --json report`` prints)."""
        return {
            "name": self.name,
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "finished": self.finished,
            "validation": [{"iteration": v.iteration, "dev": v.dev, "event": v.event}
                           for v in self.validation],
            "objectives": {layer: [{"iteration": i, "objective": o} for i, o in points]
                           for layer, points in self.objectives.items()},
            "batch_accuracy": [{"iteration": i, "accuracy": a} for i, a in self.batch_accuracy],
            "prompts_before": self.prompts_before,
            "prompts_after": self.prompts_after,
            "metrics": self.metrics,
            "usage": self.usage,
            "tokens_saved": self.tokens_saved,
            "iterations_run": self.iterations_run,
            "best_iteration": self.best_iteration,
            "wall_seconds": self.wall_seconds,
            "stop_message": self.stop_message,
            "timing": self.timing,
        }


# -- finding and reading a run ---------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a folder with a run log (finished or not)."""
    return path.is_dir() and ((path / LOG_NAME).is_file() or (path / PARTIAL_LOG_NAME).is_file())


def run_dir_for_spec(spec: Path, seed: int | None = None, iterations: int | None = None) -> Path:
    """The run folder ``dlnflow train SPEC`` (with the same ``--seed``/``--iterations``) writes.

    Raises :class:`~dlnflow.core.errors.InputError` (exit 2) when that run does not exist yet.
    """
    pipeline = compile_spec(spec)
    overrides = {k: v for k, v in {"seed": seed, "iterations": iterations}.items() if v is not None}
    train = replace(pipeline.train, **overrides)
    digest = load_dataset(pipeline.data, pipeline.graph.output.classes).digest
    folder = run_dir_for(replace(pipeline, train=train), None, digest)
    if not is_run_dir(folder):
        raise InputError(
            f"{spec} has no training run with its current settings (seed {train.seed}, "
            f"{train.iterations} iterations) at {folder}; train first: dlnflow train {spec}"
        )
    return folder


def resolve_run(target: Path, seed: int | None = None, iterations: int | None = None) -> Path:
    """A run folder as given, or the run folder of a spec file. Bad input raises ``InputError``."""
    if target.is_dir():
        if seed is not None or iterations is not None:
            raise InputError("--seed and --iterations pick a run of a spec; "
                             "they do not apply to a run folder")
        if not is_run_dir(target):
            raise InputError(f"{target} is not a run folder: it holds no {LOG_NAME}; pass a run folder "
                             "(runs/<name>/<run id>) or the spec that was trained")
        return target
    if not target.exists():
        raise InputError(f"no such run folder or spec: {target}")
    return run_dir_for_spec(target, seed, iterations)


def read_records(run_dir: Path) -> tuple[list[dict[str, Any]], bool]:
    """The log's records and whether the log is the finished one (not ``.partial``).

    A line that is not a JSON object raises :class:`~dlnflow.core.errors.DataError` located at it.
    """
    path, finished = run_dir / LOG_NAME, True
    if not path.is_file():
        path, finished = run_dir / PARTIAL_LOG_NAME, False
    records: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(str(path), number, exc.colno, "", f"not valid JSON: {exc.msg}"))
            continue
        if not isinstance(value, dict) or not isinstance(value.get("iteration"), int):
            problems.append(Problem(str(path), number, 1, "", "a log record must be a JSON object with "
                                    "an integer 'iteration'"))
            continue
        records.append(value)
    if problems:
        raise DataError(f"{path}: {len(problems)} unreadable record(s)", problems)
    if not records:
        raise DataError(f"{path} holds no records; the run wrote nothing yet")
    return records, finished


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` of a finished run, or ``None`` when absent."""
    path = run_dir / SUMMARY
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problem = Problem(str(path), exc.lineno, exc.colno, "", exc.msg)
        raise DataError(f"{path} is not valid JSON", [problem]) from None
    if not isinstance(value, dict):
        raise DataError(f"{path} must hold a JSON object")
    _check_fields(path, value, _SUMMARY_FIELDS)
    return value


_NUMBER = (int, float)
_SUMMARY_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "metrics": ((dict,), "a mapping of metric names to numbers"),
    "prompts": ((dict,), "a mapping of layer names to prompts"),
    "iterations_run": ((int,), "a whole number"),
    "best_iteration": ((int, type(None)), "a whole number or null"),
    "wall_seconds": ((*_NUMBER, type(None)), "a number or null"),
    **dict.fromkeys(USAGE_KEYS, ((int,), "a whole number")),
}


def _check_fields(path: Path, value: dict[str, Any], fields: dict[str, tuple[tuple[type, ...], str]]) -> None:
    """Refuse a run file whose known fields have the wrong type (located by JSON pointer)."""
    problems = []
    for key, (kinds, what) in fields.items():
        if key in value and (not isinstance(value[key], kinds) or isinstance(value[key], bool)):
            problems.append(Problem(str(path), 0, 0, f"/{key}", f"{key} must be {what}, "
                                    f"found {type(value[key]).__name__}"))
    metrics = value.get("metrics")
    if isinstance(metrics, dict):
        problems += [Problem(str(path), 0, 0, f"/metrics/{k}", f"metric {k} must be a number, "
                             f"found {type(v).__name__}")
                     for k, v in metrics.items() if not isinstance(v, _NUMBER) or isinstance(v, bool)]
    if problems:
        raise DataError(f"{path} is not a run summary dlnflow can read: {problems[0].message}", problems)


def _layer_name(parameter: str) -> str:
    """``answer.prompt`` -> ``answer``."""
    return parameter.rsplit(".", 1)[0] if parameter.endswith(".prompt") else parameter


def _prompts(state: Any) -> dict[str, str]:
    if not isinstance(state, dict):
        return {}
    return {_layer_name(str(k)): _demos_shown(str(v)) if str(k).endswith(".demos") else str(v)
            for k, v in state.items()}


def _demos_shown(value: str) -> str:
    """Learned demonstrations, one ``input -> target  [id]`` line each (the raw text if it does not parse)."""
    try:
        return "\n".join(f"{d.input} -> {d.target}  [{d.id}]" for d in parse_demos(value))
    except LockError:
        return value


def _collect(report: RunReport, records: list[dict[str, Any]]) -> None:
    """Fill validation points, objectives, batch accuracy and prompts from the log records."""
    for record in records:
        it = int(record["iteration"])
        if isinstance(record.get("dev"), int | float):
            event = str(record.get("event", "step"))
            report.validation.append(ValidationPoint(it, float(record["dev"]), event))
        if isinstance(record.get("batch_accuracy"), int | float):
            report.batch_accuracy.append((it, float(record["batch_accuracy"])))
        if record.get("event") == "step":
            for layer, info in (record.get("layers") or {}).items():
                if isinstance(info, dict) and isinstance(info.get("objective"), int | float):
                    report.objectives.setdefault(layer, []).append((it, float(info["objective"])))
            report.iterations_run = max(report.iterations_run, it)
        if record.get("event") == "stopped":
            report.stop_message = str(record.get("message") or record.get("reason") or "stopped")
    with_prompts = [r for r in records if isinstance(r.get("prompts"), dict)]
    if with_prompts:
        first = next((r for r in with_prompts if r.get("event") == "before"), with_prompts[0])
        report.prompts_before = _prompts(first["prompts"])
        report.prompts_after = _prompts(with_prompts[-1]["prompts"])


def load_run(run_dir: Path) -> RunReport:
    """Read one run folder into a :class:`RunReport`."""
    records, finished = read_records(run_dir)
    summary = read_summary(run_dir) if finished else None
    report = RunReport(name=run_dir.parent.name, run_id=run_dir.name, run_dir=run_dir,
                       finished=summary is not None)
    _collect(report, records)
    before = next((v for v in report.validation if v.event == "before"), None)
    if before is not None:
        report.metrics["dev_before"] = before.dev
    usage = records[-1].get("usage")
    usage = usage if isinstance(usage, dict) else {}
    timed = [r["timing"] for r in records if isinstance(r.get("timing"), dict)]
    report.timing = timed[-1] if timed else None
    if summary is not None:
        report.timing = summary.get("timing") or report.timing
        report.metrics.update({k: float(v) for k, v in (summary.get("metrics") or {}).items()})
        report.prompts_after = _prompts(summary.get("prompts")) or report.prompts_after
        report.iterations_run = int(summary.get("iterations_run", report.iterations_run))
        report.best_iteration = summary.get("best_iteration")
        report.wall_seconds = summary.get("wall_seconds")
        usage = summary
    report.usage = {k: int(v) if isinstance(v := usage.get(k, 0), int | float) else 0 for k in USAGE_KEYS}
    return report


# -- markdown --------------------------------------------------------------------------------------
def pct(x: float | None) -> str:
    """``0.825`` -> ``82.5%``; ``None`` -> an em dash."""
    return "—" if x is None else f"{100 * x:.1f}%"


def markdown_fence(text: str) -> str:
    """A backtick fence longer than any run of backticks inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _code_block(text: str) -> list[str]:
    fence = markdown_fence(text)
    return [f"{fence}text", text if text else "(empty)", fence]


def _best_index(report: RunReport) -> int | None:
    """Which validation point the kept prompts come from (the last match of the best iteration)."""
    if report.best_iteration is None:
        return None
    matches = [i for i, v in enumerate(report.validation) if v.iteration == report.best_iteration]
    return matches[-1] if matches else None


def _status_line(report: RunReport) -> str:
    if not report.finished:
        why = (f"it stopped: {report.stop_message}" if report.stop_message
               else "the run is still going or was stopped")
        return (f"**Not finished**: the log stops after iteration {report.iterations_run} "
                f"({why}); the numbers below are what it logged.")
    best = ("" if report.best_iteration is None
            else f"; the kept prompts come from iteration {report.best_iteration}")
    wall = "" if report.wall_seconds is None else f" in {report.wall_seconds:.1f} s"
    return f"Finished after {report.iterations_run} iteration(s){wall}{best}."


def _results_section(report: RunReport) -> list[str]:
    m = report.metrics
    return ["## Accuracy", "", "| split | before training | after training |", "|---|---|---|",
            f"| dev | {pct(m.get('dev_before'))} | {pct(m.get('dev'))} |",
            f"| test | {pct(m.get('test_before'))} | {pct(m.get('test'))} |", ""]


def _validation_section(report: RunReport, curve: str | None) -> list[str]:
    lines = ["## Validation points", "", "| iteration | dev accuracy | note |", "|---:|---:|---|"]
    best = _best_index(report)
    for i, v in enumerate(report.validation):
        notes = [EVENT_NOTES.get(v.event, "")] + (["best, kept"] if i == best else [])
        lines.append(f"| {v.iteration} | {pct(v.dev)} | {', '.join(n for n in notes if n)} |")
    if not report.validation:
        lines.append("| — | — | no validation logged |")
    lines.append("")
    if curve:
        lines += [f"![Dev accuracy and training objective per iteration]({curve})", ""]
    return lines


def _prompts_section(report: RunReport) -> list[str]:
    lines = ["## Prompts", ""]
    for layer in sorted(set(report.prompts_before) | set(report.prompts_after)):
        before, after = report.prompts_before.get(layer, ""), report.prompts_after.get(layer, "")
        lines += [f"### {layer}", "", "Before training:", "", *_code_block(before), ""]
        if after == before:
            lines += ["After training: unchanged.", ""]
        else:
            lines += ["After training:", "", *_code_block(after), ""]
    return lines


def _cost_section(report: RunReport) -> list[str]:
    u = report.usage
    rows = [("backend calls (real model calls)", f"{u.get('backend_calls', 0):,}"),
            ("cache hits", f"{u.get('cache_hits', 0):,}"),
            ("prompt tokens", f"{u.get('prompt_tokens', 0):,}"),
            ("completion tokens", f"{u.get('completion_tokens', 0):,}"),
            ("tokens saved by the cache",
             f"{report.tokens_saved:,} ({u.get('saved_prompt_tokens', 0):,} prompt "
             f"+ {u.get('saved_completion_tokens', 0):,} completion)")]
    return ["## Calls and tokens", "", "| | |", "|---|---:|", *[f"| {k} | {v} |" for k, v in rows], ""]


def render_markdown(report: RunReport, curve: str | None = CURVE_NAME) -> str:
    """The report as markdown; ``curve`` is the picture's path relative to the markdown file."""
    lines = [f"# Training run: {report.name} ({report.run_id})", "",
             f"Run folder: `{report.run_dir}`", "", _status_line(report), ""]
    lines += _results_section(report) + _validation_section(report, curve)
    lines += _prompts_section(report) + _cost_section(report) + timing_markdown(report.timing)
    return "\n".join(lines).rstrip("\n") + "\n"


# -- the picture -----------------------------------------------------------------------------------
def plot_learning_curve(report: RunReport, path: Path) -> Path:
    """Draw dev accuracy (top) and each layer's training objective (bottom) per iteration to ``path``."""
    fig = learning_curve_figure(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _mark_test(axes: Any, report: RunReport) -> None:
    """Test accuracy before training (at iteration 0) and with the kept prompts (at the last iteration)."""
    points = [(0, report.metrics.get("test_before")), (report.iterations_run, report.metrics.get("test"))]
    shown = [(i, v) for i, v in points if v is not None]
    if shown:
        axes.plot(*zip(*shown, strict=True), linestyle="none", marker="D", color="tab:green",
                  label="test accuracy (before, after)")


def learning_curve_figure(report: RunReport) -> Any:
    """The learning-curve figure (a matplotlib ``Figure``; save it as PNG or SVG).

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.5, 6.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    if report.validation:
        top.plot([v.iteration for v in report.validation], [v.dev for v in report.validation],
                 marker="o", color="tab:blue", label="dev accuracy (validation points)")
    if report.batch_accuracy:
        top.plot(*zip(*report.batch_accuracy, strict=True), linestyle="none", marker=".", color="tab:gray",
                 alpha=0.7, label="train batch accuracy")
    _mark_test(top, report)
    best = _best_index(report)
    if best is not None:
        v = report.validation[best]
        top.scatter([v.iteration], [v.dev], s=140, facecolors="none", edgecolors="tab:red", zorder=3,
                    label=f"kept (iteration {v.iteration})")
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("accuracy")
    top.set_title(f"{report.name} ({report.run_id})")
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize="small")
    for layer, points in sorted(report.objectives.items()):
        bottom.plot(*zip(*points, strict=True), marker="s", markersize=4, label=f"layer {layer}")
    if report.objectives:
        bottom.legend(loc="best", fontsize="small")
    else:
        bottom.text(0.5, 0.5, "no optimisation steps logged", ha="center", va="center",
                    transform=bottom.transAxes, color="tab:gray")
    bottom.set_ylabel("training objective\n(score of the chosen prompt)")
    bottom.set_xlabel("iteration")
    bottom.grid(alpha=0.3)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


# -- both ------------------------------------------------------------------------------------------
def write_report(report: RunReport, out_dir: Path) -> dict[str, Path]:
    """Write ``report.md`` and ``learning_curve.png`` into ``out_dir``; return their paths."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        curve = plot_learning_curve(report, out_dir / CURVE_NAME)
        markdown = out_dir / REPORT_NAME
        markdown.write_text(render_markdown(report, curve.name), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the report into {out_dir}: {exc.strerror or exc}; "
                         "choose another folder with --out") from exc
    return {"report": markdown, "learning_curve": curve}
