"""``dlnflow report``: a training run as markdown and a learning-curve picture."""

from __future__ import annotations

from pathlib import Path

import click

from dlnflow.cli.common import pct
from dlnflow.cli.context import app
from dlnflow.report.markdown import load_run, resolve_run, write_report


@click.command("report")
@click.argument("target", metavar="RUN_OR_SPEC", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.md and learning_curve.png [default: the run folder].")
@click.option("--seed", type=int,
              help="With a spec: the run trained with this seed (as with `train --seed`).")
@click.option("--iterations", type=click.IntRange(min=0),
              help="With a spec: the run trained with this many iterations (as with `train --iterations`).")
@click.pass_context
def report(ctx: click.Context, target: Path, out: Path | None, seed: int | None,
           iterations: int | None) -> None:
    """Write a report of a training run: report.md and learning_curve.png.

    RUN_OR_SPEC is a run folder (runs/<name>/<run id>) or a spec; for a spec the report
    is of the run its current seed and settings train into (give --seed/--iterations as
    you gave them to `train`). The markdown shows each layer's prompt before and after
    training, every validation point, dev and test accuracy before and after, model
    calls, tokens and the tokens the cache saved; the picture plots dev accuracy at the
    validation points and the training objective per iteration. With the global --json
    flag the report's data is printed as JSON.

    \b
    Examples:
      dlnflow report pipelines/quickstart.yaml
      dlnflow report runs/quickstart/seed42-9ce64c66 --out reports/quickstart
      dlnflow --json report pipelines/quickstart.yaml --iterations 2
    """

    a = app(ctx)
    run_dir = resolve_run(target, seed, iterations)
    data = load_run(run_dir)
    paths = write_report(data, out if out is not None else run_dir)
    payload = {**data.as_dict(), **{k: str(v) for k, v in paths.items()}}
    m = data.metrics
    lines = [
        f"report: {paths['report']}",
        f"learning curve: {paths['learning_curve']}",
        f"dev accuracy:  {_pct(m.get('dev_before'))} before -> {_pct(m.get('dev'))} after "
        f"({len(data.validation)} validation points)",
        f"test accuracy: {_pct(m.get('test_before'))} before -> {_pct(m.get('test'))} after",
        f"backend calls: {data.usage['backend_calls']:,}, tokens saved by the cache: {data.tokens_saved:,}",
    ]
    if not data.finished:
        lines.insert(0, f"note: the run in {run_dir} has not finished; reporting what it logged so far")
    a.emit(payload, "\n".join(lines))


def _pct(x: float | None) -> str:
    return "-" if x is None else pct(x)
