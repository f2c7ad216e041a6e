"""``dlnflow results``: mean, spread and confidence interval of a sweep's metrics, per grid point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dlnflow.cli.common import SPEC_ARG
from dlnflow.cli.context import app
from dlnflow.errors import InputError


@click.command("results")
@SPEC_ARG
@click.option("--seeds", help="The seeds of the sweep, as given to `train --seeds`.")
@click.option("--set", "sets", multiple=True, metavar="SETTING=V[,V...]",
              help="The settings of the sweep, as given to `train --set` (repeatable).")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="Confidence level of the t interval.")
@click.pass_context
def results(ctx: click.Context, spec: Path, seeds: str | None, sets: tuple[str, ...],
            confidence: float) -> None:
    """Summarize the finished runs of SPEC's sweep: per grid point and metric (dev, test,
    dev_before, test_before) the mean over seeds, the standard deviation and a t confidence
    interval, as a markdown table (or JSON with --json).

    The sweep is the spec's `experiments` section with --seeds/--set applied, as in
    `dlnflow train`; without either, the sweep recorded in the lock file (else the spec's
    single run). Runs not finished yet are listed as missing. Reading results calls no model.

    \b
    Examples:
      dlnflow results pipelines/quickstart.yaml
      dlnflow --json results pipelines/quickstart.yaml --seeds 13,42,25 --set train.prompt_candidates=3,5
    """
    from dlnflow import lock as lockmod
    from dlnflow.aggregate import best_point, markdown_table
    from dlnflow.compiler import compile_spec
    from dlnflow.experiments import Matrix, matrix_for, parse_seeds, parse_set, point_label
    from dlnflow.sweep import Sweep

    a = app(ctx)
    if not spec.exists():
        raise click.BadParameter(f"no such file: {spec}", param_hint="SPEC")
    base = compile_spec(spec)
    matrix, is_sweep = matrix_for(base, parse_seeds(seeds) if seeds else None, [parse_set(s) for s in sets])
    recorded = (lockmod.read_lock(base.lock_path) or {}).get("sweep")
    if not is_sweep and isinstance(recorded, dict) and recorded.get("seeds"):
        matrix = Matrix(tuple(recorded["seeds"]), dict(recorded.get("grid") or {}),
                        dict(recorded.get("fixed") or {}))
    sweep = Sweep(base, matrix, a.resolve_cache_dir(spec.parent), a.cache_mode)
    points = sweep.points(confidence)
    if not any(p.seeds for p in points):
        raise InputError(f"{spec} has no finished run for these settings yet ({len(sweep.states)} expected); "
                         f"train first: dlnflow train {spec}" + "".join(f" --set {s}" for s in sets)
                         + (f" --seeds {seeds}" if seeds else ""))
    best = best_point(points)
    runs: list[dict[str, Any]] = [
        {"seed": s.point.seed, "settings": s.point.settings, "run_dir": str(s.run_dir),
         "finished": s.summary is not None, "metrics": s.metrics} for s in sweep.states]
    payload = {"spec": str(spec), "confidence": confidence, "points": [p.as_dict() for p in points],
               "best": None if best is None else {"point": best, "settings": points[best].settings},
               "runs": runs, "missing": sum(1 for r in runs if not r["finished"])}
    lines = [markdown_table(points, point_label)]
    if best is not None:
        lines.append(f"best by mean dev: {point_label(points[best].settings)}")
    if payload["missing"]:
        lines.append(f"{payload['missing']} run(s) not finished: run `dlnflow train` with the same options")
    a.emit(payload, "\n".join(lines))
