"""``dlnflow report``: a training run as markdown and a learning-curve picture."""

from __future__ import annotations

from pathlib import Path

import click

from dlnflow.cli.common import pct
from dlnflow.cli.context import app
from dlnflow.report.html import write_html_report
from dlnflow.report.markdown import load_run, resolve_run, write_report


@click.command("report")
@click.argument("target", metavar="RUN_OR_SPEC", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.md and learning_curve.png [default: the run folder].")
@click.option("--seed", type=int,
              help="With a spec: the run trained with this seed (as with `train --seed`).")
@click.option("--iterations", type=click.IntRange(min=0),
              help="With a spec: the run trained with this many iterations (as with `train --iterations`).")
@click.option("--html", "html", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one self-contained HTML page to this file instead (a sweep's spec: every run).")
@click.option("--compare", metavar="RUN_A,RUN_B",
              help="With --html and a sweep: the two runs (run folder names) shown side by side "
                   "[default: the two best by dev accuracy].")
@click.pass_context
def report(ctx: click.Context, target: Path, out: Path | None, seed: int | None,
           iterations: int | None, html: Path | None, compare: str | None) -> None:
    """Write a report of a training run: report.md and learning_curve.png, or one HTML page.

    RUN_OR_SPEC is a run folder (runs/<name>/<run id>) or a spec; for a spec the report
    is of the run its current seed and settings train into (give --seed/--iterations as
    you gave them to `train`). The markdown shows each layer's prompt before and after
    training, every validation point, dev and test accuracy before and after, model
    calls, tokens and the tokens the cache saved; the picture plots dev accuracy at the
    validation points and the training objective per iteration. With the global --json
    flag the report's data is printed as JSON.

    With --html OUT.html the report is one HTML file that needs nothing else (no network,
    plots inlined): learning curve, every iteration's candidates with scores and the chosen
    one, a diff of each chosen prompt against the previous, predicted-label counts on dev and
    test, calls, tokens, cache hits and cost. For a spec with an experiments section (a
    sweep) the page has a table of all runs (mean and confidence interval per setting),
    each run's section and two runs side by side.

    \b
    Examples:
      dlnflow report pipelines/quickstart.yaml
      dlnflow report runs/quickstart/seed42-9ce64c66 --out reports/quickstart
      dlnflow --json report pipelines/quickstart.yaml --iterations 2
      dlnflow report pipelines/quickstart.yaml --html quickstart.html
    """

    a = app(ctx)
    if html is not None:
        _html(ctx, target, html, seed, iterations, compare, out)
        return
    if compare is not None:
        raise click.UsageError("--compare goes with --html")
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


def _html(ctx: click.Context, target: Path, html: Path, seed: int | None, iterations: int | None,
          compare: str | None, out: Path | None) -> None:
    if out is not None:
        raise click.UsageError("--out names a folder for report.md; with --html give the file to write")
    pair = None
    if compare is not None:
        parts = [p.strip() for p in compare.split(",")]
        if len(parts) != 2 or not all(parts):
            raise click.BadParameter("give two run folder names separated by a comma", param_hint="--compare")
        pair = (parts[0], parts[1])
    written = write_html_report(target, html, seed, iterations, pair)
    what = f"a sweep of {len(written['runs'])} run(s)" if written["sweep"] else f"run {written['runs'][0]}"
    app(ctx).emit(written, f"HTML report ({what}): {written['html']}")
