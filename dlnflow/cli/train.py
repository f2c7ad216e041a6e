"""``dlnflow train``: learn the prompts of a pipeline (one run or a sweep) and write its lock file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dlnflow.api import training as api
from dlnflow.api.training import TrainOptions
from dlnflow.cli.common import SPEC_ARG, pct
from dlnflow.cli.context import app
from dlnflow.cli.progress import ProgressLine
from dlnflow.runtime.timing import timing_lines


@click.command("train")
@SPEC_ARG
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Override train.seed (every random choice follows it).")
@click.option("--seeds", help="Train once per seed, e.g. 13,42,25 (a sweep; replaces experiments.seeds).")
@click.option("--set", "sets", multiple=True, metavar="SETTING=V[,V...]",
              help="Override a dotted setting; several comma-separated values make a sweep over them "
                   "(repeatable), e.g. --set train.prompt_candidates=3,5.")
@click.option("--iterations", type=click.IntRange(min=0), help="Override train.iterations.")
@click.option("--max-calls", type=click.IntRange(min=0),
              help="Stop before more than N real backend calls (for the whole command).")
@click.option("--max-tokens", type=click.IntRange(min=0),
              help="Stop before more than N real tokens could be spent (for the whole command).")
@click.option("--dry-run", is_flag=True,
              help="Predict the calls and tokens training needs (cached vs new) without calling a model.")
@click.option("--track", type=click.Choice(["mlflow", "none"]),
              help="Log the run (a sweep: a parent run and one child per run) to MLflow; `none` turns off the "
                   "spec's tracking section. URI: $DLNFLOW_TRACKING_URI, else tracking.uri, else mlflow.db "
                   "at the project root.")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Where a sweep's runs go: this machine, or one Ray task per run on a Ray cluster "
                   "[default: experiments.executor, else local].")
@click.option("--jobs", type=click.IntRange(min=1),
              help="With --executor local: how many runs train at once, each in its own process "
                   "[default: experiments.jobs, else 1].")
@click.option("--address", metavar="ADDR",
              help="With --executor ray: the cluster (e.g. 10.0.0.5:6379) [default: experiments.address, "
                   "else $RAY_ADDRESS, else a Ray instance started for this command].")
@click.pass_context
def train(ctx: click.Context, spec: Path, seed: int | None, seeds: str | None, sets: tuple[str, ...],
          iterations: int | None, max_calls: int | None, max_tokens: int | None, dry_run: bool,
          track: str | None, executor: str | None, jobs: int | None, address: str | None) -> None:
    """Train the prompts of SPEC and write SPEC's lock file beside it.

    Runs the method in the spec's `train` section (dln1, vi, ape, fewshot or none),
    evaluates the initial prompts on dev and test, validates every `validate_every`
    iterations, keeps the best-dev prompts and reports test accuracy with them.
    Every model call is cached: the same command again replays from the cache with
    zero backend calls, and a killed run continues where it stopped. Before training,
    a dry run predicts the calls and tokens; both predicted and actual are reported.

    A spec with an `experiments` section (or --seeds / --set with several values) is a
    sweep: every seed x grid combination is trained in order, each in its own run folder;
    finished runs are skipped on the next invocation. The lock then holds the best run
    (best mean dev over seeds) and a summary of the sweep; see `dlnflow results SPEC`.
    `--jobs N` trains N runs at once in separate processes; `--executor ray` makes each run a
    task on a Ray cluster (workers share calls through --cache-remote).

    The per-iteration log goes to runs/<name>/seed<N>-<hash>/log.jsonl at the project
    root (override with DLNFLOW_RUNS_DIR).

    \b
    Examples:
      dlnflow train pipelines/quickstart.yaml
      dlnflow train pipelines/quickstart.yaml --dry-run
      dlnflow --json train pipelines/quickstart.yaml --seed 7
      dlnflow train pipelines/quickstart.yaml --seeds 13,42,25 --set train.prompt_candidates=3,5
      dlnflow train pipelines/navigate-dln2.yaml --iterations 2 --max-calls 500
      dlnflow train pipelines/quickstart.yaml --track mlflow
      dlnflow train pipelines/quickstart.yaml --seeds 1,2,3,4 --jobs 2
      dlnflow --cache-remote redis://10.0.0.5:6380/0 train pipelines/quickstart.yaml \\
          --seeds 1,2,3,4 --executor ray --address 10.0.0.5:6379
    """
    a = app(ctx)
    if not spec.exists():
        raise click.BadParameter(f"no such file: {spec}", param_hint="SPEC")
    if seed is not None and seeds:
        raise click.UsageError("--seed and --seeds exclude each other")
    options = TrainOptions(seed=seed, seeds=seeds, sets=sets, iterations=iterations, max_calls=max_calls,
                           max_tokens=max_tokens, track=track, executor=executor, jobs=jobs, address=address)
    cache = (a.resolve_cache_dir(spec.parent), a.cache_mode)
    if dry_run:
        outcome = api.plan(spec, options, *cache)
        a.emit(outcome.payload, "\n".join([outcome.table, *(f"warning: {w}" for w in outcome.notes)]))
        return
    bar = ProgressLine(enabled=not a.quiet and not a.as_json, verbose=a.verbosity > 0)

    def info(line: str) -> None:
        bar.close()
        a.info(line)

    try:
        outcome = api.train(spec, options, *cache, progress=bar, info=info, warn=a.warn,
                            cache_remote=a.cache_remote or "")
    finally:
        bar.close()
    if outcome.payload.get("lock_note"):
        a.warn(outcome.payload["lock_note"])
    a.emit(outcome.payload, _sweep_text(outcome) if outcome.payload.get("sweep")
           else _run_text(outcome.payload, verbose=a.verbosity > 0))


def _vs(predicted: dict[str, Any] | None, payload: dict[str, Any]) -> str:
    if not predicted:
        return ""
    exact = "exact" if predicted.get("exact") else "estimate"
    span = predicted.get("backend_calls_range")
    calls = f"{predicted['backend_calls']} calls"
    if span and not predicted.get("exact"):
        calls += f" (range {span[0]}-{span[1]})"
    return (f"predicted ({exact}): {calls}, {predicted['prompt_tokens']} prompt + "
            f"{predicted['completion_tokens']} completion tokens; actual: {payload['backend_calls']} calls, "
            f"{payload['prompt_tokens']} + {payload['completion_tokens']} tokens")


def _run_text(payload: dict[str, Any], verbose: bool = False) -> str:
    m = payload["metrics"]
    lines = [
        f"dev accuracy:  {pct(m['dev_before'])} before -> {pct(m['dev'])} after",
        f"test accuracy: {pct(m['test_before'])} before -> {pct(m['test'])} after",
        f"backend calls: {payload['backend_calls']} (cache hits {payload['cache_hits']}), "
        f"tokens: {payload['prompt_tokens']} prompt + {payload['completion_tokens']} completion, "
        f"{payload['wall_seconds']:.1f}s",
        _vs(payload.get("predicted"), payload),
        f"learned prompts: {payload['lock']}",
        f"run log: {payload['run_dir']}",
    ]
    lines += [f"  {name}: {prompt!r}" for name, prompt in payload["prompts"].items()]
    if verbose and payload.get("timing"):
        lines += ["where the time went:", *(f"  {line}" for line in timing_lines(payload["timing"]))]
    return "\n".join(lines)


def _sweep_text(outcome: api.Outcome) -> str:
    payload = outcome.payload
    predicted = payload["predicted"]
    return "\n".join([
        outcome.table, "", *outcome.notes,
        f"backend calls: {payload['backend_calls']} (cache hits {payload['cache_hits']}), tokens: "
        f"{payload['prompt_tokens']} prompt + {payload['completion_tokens']} completion, "
        f"{payload['wall_seconds']:.1f}s",
        f"predicted: {predicted['backend_calls']} calls, {predicted['prompt_tokens']} prompt + "
        f"{predicted['completion_tokens']} completion tokens",
        f"learned prompts (best run) and sweep summary: {payload['lock']}",
    ])
