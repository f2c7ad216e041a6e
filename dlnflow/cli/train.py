"""``dlnflow train``: learn the prompts of a pipeline and write its lock file."""

from __future__ import annotations

from pathlib import Path

import click

from dlnflow.cli.common import SPEC_ARG, open_network, pct
from dlnflow.cli.context import app
from dlnflow.cli.progress import ProgressLine
from dlnflow.settings import BudgetSettings


@click.command("train")
@SPEC_ARG
@click.option("--seed", type=int, help="Override train.seed (every random choice follows it).")
@click.option("--iterations", type=click.IntRange(min=0), help="Override train.iterations.")
@click.option("--max-calls", type=click.IntRange(min=0), help="Stop before more than N real backend calls.")
@click.option("--max-tokens", type=click.IntRange(min=0), help="Stop once N real tokens are spent.")
@click.pass_context
def train(ctx: click.Context, spec: Path, seed: int | None, iterations: int | None,
          max_calls: int | None, max_tokens: int | None) -> None:
    """Train the prompts of SPEC and write SPEC's lock file beside it.

    Runs the method in the spec's `train` section (dln1, vi, ape, fewshot or none),
    evaluates the initial prompts on dev and test, validates every `validate_every`
    iterations, keeps the best-dev prompts and reports test accuracy with them.
    Every model call is cached: the same command again replays from the cache with
    zero backend calls, and a killed run continues where it stopped.

    The per-iteration log goes to runs/<name>/seed<N>-<hash>/log.jsonl at the project
    root (override with DLNFLOW_RUNS_DIR).

    \b
    Examples:
      dlnflow train pipelines/quickstart.yaml
      dlnflow --json train pipelines/quickstart.yaml --seed 7
      dlnflow train pipelines/navigate-dln2.yaml --iterations 2 --max-calls 500
    """
    a = app(ctx)
    net = open_network(a, spec)
    with net:
        net.override(seed=seed, iterations=iterations)
        if max_calls is not None or max_tokens is not None:
            b = net.pipeline.train.budget
            net.override(budget=BudgetSettings(
                max_calls if max_calls is not None else b.max_calls,
                max_tokens if max_tokens is not None else b.max_tokens))
        t = net.pipeline.train
        a.info(f"training {spec} with {t.method}: {t.iterations} iterations, seed {t.seed}, "
               f"cache {net.cache_dir if net.cache_mode != 'off' else 'off'}")
        bar = ProgressLine(enabled=not a.quiet and not a.as_json, verbose=a.verbosity > 0)
        try:
            result = net.train(progress=bar)
        finally:
            bar.close()
        payload = result.as_dict()
        m = result.metrics
        lines = [
            f"dev accuracy:  {pct(m['dev_before'])} before -> {pct(m['dev'])} after",
            f"test accuracy: {pct(m['test_before'])} before -> {pct(m['test'])} after",
            f"backend calls: {payload['backend_calls']} (cache hits {payload['cache_hits']}), "
            f"tokens: {payload['prompt_tokens']} prompt + {payload['completion_tokens']} completion, "
            f"{payload['wall_seconds']:.1f}s",
            f"learned prompts: {result.lock_path}",
            f"run log: {result.run_dir}",
        ]
        for name, prompt in result.prompts.items():
            lines.append(f"  {name}: {prompt!r}")
        a.emit(payload, "\n".join(lines))
