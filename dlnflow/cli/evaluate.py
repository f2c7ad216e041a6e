"""``dlnflow eval``: accuracy of the pipeline (with its learned prompts) on a split."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import click

from dlnflow.cli.common import SPEC_ARG, open_network, pct, use_lock
from dlnflow.cli.context import app


@click.command("eval")
@SPEC_ARG
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default="test", show_default=True,
              help="Which part of the data to evaluate on.")
@click.option("--strict", is_flag=True, help="Refuse to run when the lock file drifted from the spec.")
@click.option("--initial", is_flag=True, help="Ignore the lock file: evaluate the prompts written in the spec.")
@click.pass_context
def evaluate(ctx: click.Context, spec: Path, split: str, strict: bool, initial: bool) -> None:
    """Evaluate SPEC on a data split and print its accuracy.

    Uses the learned prompts from SPEC's lock file when there is one (and says whether it
    matches the spec); `--initial` evaluates the spec's own prompts instead. When a sweep
    wrote the lock, the settings of its best run are applied too (all but `train.*`, which
    only training reads), and the output names that run.

    \b
    Examples:
      dlnflow eval pipelines/quickstart.yaml
      dlnflow --json eval pipelines/quickstart.yaml --split dev
    """
    a = app(ctx)
    started = time.monotonic()
    with open_network(a, spec) as net:
        if not initial:
            use_lock(a, net, strict)
        result = net.evaluate(split)
        usage = net.client.usage.as_dict()
        payload = {
            "split": split,
            "accuracy": round(result.accuracy, 6),
            "n": result.n,
            "label_counts": dict(sorted(Counter(result.predictions).items())),
            "calibration_prior": result.prior,
            "metrics": {split: round(result.accuracy, 6)},
            "lock": str(net.pipeline.lock_path),
            "lock_note": net.lock_note,
            "best_run": net.best_run.as_dict() if net.best_run is not None else None,
            "wall_seconds": round(time.monotonic() - started, 3),
            **{k: usage[k] for k in ("backend_calls", "cache_hits", "prompt_tokens", "completion_tokens")},
        }
        a.emit(payload, f"{split} accuracy: {pct(result.accuracy)} ({sum(result.correct)}/{result.n})")
