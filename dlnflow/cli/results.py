"""``dlnflow results``: mean, spread and confidence interval of a sweep's metrics, per grid point."""

from __future__ import annotations

from pathlib import Path

import click

from dlnflow.api.training import TrainOptions
from dlnflow.api.training import results as results_of
from dlnflow.cli.common import SPEC_ARG
from dlnflow.cli.context import app


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
    a = app(ctx)
    if not spec.exists():
        raise click.BadParameter(f"no such file: {spec}", param_hint="SPEC")
    outcome = results_of(spec, TrainOptions(seeds=seeds, sets=sets), confidence, a.resolve_cache_dir(spec.parent),
                         a.cache_mode)
    a.emit(outcome.payload, "\n".join([outcome.table, *outcome.notes]))
