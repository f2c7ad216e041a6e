"""``dlnflow train``: learn the prompts of a pipeline (one run or a sweep) and write its lock file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from dlnflow.cli.common import SPEC_ARG, pct
from dlnflow.cli.context import AppContext, app
from dlnflow.cli.progress import ProgressLine
from dlnflow.settings import BudgetSettings

USAGE_KEYS = ("backend_calls", "cache_hits", "prompt_tokens", "completion_tokens")


@click.command("train")
@SPEC_ARG
@click.option("--seed", type=int, help="Override train.seed (every random choice follows it).")
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
          executor: str | None, jobs: int | None, address: str | None) -> None:
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
      dlnflow train pipelines/quickstart.yaml --seeds 1,2,3,4 --jobs 2
      dlnflow --cache-remote redis://10.0.0.5:6380/0 train pipelines/quickstart.yaml \\
          --seeds 1,2,3,4 --executor ray --address 10.0.0.5:6379
    """
    from dlnflow.compiler import compile_spec
    from dlnflow.experiments import matrix_for, parse_seeds, parse_set

    a = app(ctx)
    if not spec.exists():
        raise click.BadParameter(f"no such file: {spec}", param_hint="SPEC")
    if seed is not None and seeds:
        raise click.UsageError("--seed and --seeds exclude each other")
    base = compile_spec(spec)
    chosen = parse_seeds(seeds) if seeds else None
    settings = [parse_set(text) for text in sets]
    if seed is not None:
        if base.experiments.seeds:
            chosen = (seed,)
        else:
            settings.insert(0, ("train.seed", [seed]))
    if iterations is not None:
        settings.insert(0, ("train.iterations", [iterations]))
    matrix, is_sweep = matrix_for(base, chosen, settings)
    from dlnflow.executors import check_executor

    if (executor == "ray" or (jobs or 1) > 1) and not is_sweep and not dry_run:
        raise click.UsageError("--executor ray and --jobs spread the runs of a sweep; give --seeds or --set "
                               "with several values (or an experiments section)")
    given_address = address
    executor = executor or base.experiments.executor
    jobs = jobs or base.experiments.jobs
    address = address or base.experiments.address
    check_executor(executor, jobs, given_address if executor != "ray" else address,
                   budget_given=is_sweep and (max_calls is not None or max_tokens is not None))
    budget = BudgetSettings(max_calls if max_calls is not None else base.train.budget.max_calls,
                            max_tokens if max_tokens is not None else base.train.budget.max_tokens)
    from dlnflow.sweep import Sweep

    sweep = Sweep(base, matrix, a.resolve_cache_dir(spec.parent), a.cache_mode, a.cache_remote or "")
    if dry_run:
        _dry_run(a, sweep, is_sweep, budget)
    elif is_sweep:
        _train_sweep(a, spec, sweep, budget, (executor, jobs, address))
    else:
        _train_one(a, spec, sweep, budget)


def _dry_run(a: AppContext, sweep: Any, is_sweep: bool, budget: BudgetSettings) -> None:
    if not is_sweep:  # a single run is always trained (replayed), never skipped
        for s in sweep.states:
            s.summary = None
    plan = sweep.plan()
    payload = plan.as_dict()
    new = payload["new"]
    warnings = []
    if budget.max_calls is not None and new["calls"] > budget.max_calls:
        warnings.append(f"the budget of {budget.max_calls} calls is below the {new['calls']} predicted: "
                        "training would stop early (rerun with a higher budget to continue)")
    tokens = new["prompt_tokens"] + new["completion_tokens"]
    if budget.max_tokens is not None and tokens > budget.max_tokens:
        warnings.append(f"the budget of {budget.max_tokens} tokens is below the {tokens} predicted")
    payload["warnings"] = warnings
    a.emit(payload, "\n".join([plan.text(), *(f"warning: {w}" for w in warnings)]))


def _progress(a: AppContext) -> ProgressLine:
    return ProgressLine(enabled=not a.quiet and not a.as_json, verbose=a.verbosity > 0)


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


def _train_one(a: AppContext, spec: Path, sweep: Any, budget: BudgetSettings) -> None:
    from dlnflow.dryrun import plan_network
    from dlnflow.trainer import Trainer

    s = sweep.states[0]
    net = s.net
    with net:
        if budget != net.pipeline.train.budget:
            net.override(budget=budget)
        t = net.pipeline.train
        a.info(f"training {spec} with {t.method}: {t.iterations} iterations, seed {t.seed}, "
               f"cache {net.cache_dir if net.cache_mode != 'off' else 'off'}")
        plan = plan_network(net)
        a.info(f"predicted: {plan.new_calls} new backend calls, {plan.cached_calls} cached"
               + ("" if plan.exact else " (estimate)"))
        overrides = s.point.fixed or None
        bar = _progress(a)
        try:
            result = Trainer(net, progress=bar, run_dir=s.run_dir if overrides else None,
                             prediction=plan.predicted(), overrides=overrides).fit()
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
            _vs(result.predicted, payload),
            f"learned prompts: {result.lock_path}",
            f"run log: {result.run_dir}",
        ]
        for name, prompt in result.prompts.items():
            lines.append(f"  {name}: {prompt!r}")
        a.emit(payload, "\n".join(lines))


def _run_row(s: Any) -> dict[str, Any]:
    summary = s.summary or {}
    spent = {k: 0 if s.skipped else int(summary.get(k, 0)) for k in USAGE_KEYS}
    return {"seed": s.point.seed, "settings": s.point.settings, "run_dir": str(s.run_dir),
            "skipped": s.skipped, "worker": s.worker or None, "metrics": summary.get("metrics"), **spent,
            "predicted": None if s.skipped else summary.get("predicted")}


def _train_sweep(a: AppContext, spec: Path, sweep: Any, budget: BudgetSettings,
                 where: tuple[str, int, str | None] = ("local", 1, None)) -> None:
    from dlnflow.aggregate import markdown_table
    from dlnflow.executors import run_sweep
    from dlnflow.experiments import point_label

    executor, jobs, address = where

    n = len(sweep.states)
    started = time.monotonic()
    a.info(f"sweep of {spec}: {n} run(s) ({len(sweep.matrix.seeds)} seed(s) x {len(sweep.matrix.points())} "
           f"setting(s)), {len(sweep.pending)} to train")
    bar = _progress(a)

    def listen(event: dict[str, Any]) -> None:
        s = event["run"]
        bar.close()
        where = f"run {s.index + 1}/{n} ({s.point.label})"
        if event["event"] == "skip":
            a.info(f"{where}: finished earlier, skipped")
        elif event["event"] == "start":
            a.info(f"{where}: training")
        else:
            m = s.summary["metrics"]
            a.info(f"{where}: dev {pct(m['dev_before'])} -> {pct(m['dev'])}, test {pct(m['test'])}, "
                   f"{s.summary['backend_calls']} backend calls")

    try:
        if executor == "local" and jobs == 1:
            sweep.run(budget, progress=bar, listen=listen)
        else:
            a.info(f"executor: {executor}" + (f", {jobs} processes" if executor == "local" else
                                              f", cluster {address or 'from $RAY_ADDRESS or started here'}"))
            run_sweep(sweep, executor, jobs, address, listen=listen)
    finally:
        bar.close()
    lock = sweep.write_lock()
    rows = [_run_row(s) for s in sweep.states]
    totals = {k: sum(r[k] for r in rows) for k in USAGE_KEYS}
    predicted = {k: sum((r["predicted"] or {}).get(k, 0) for r in rows) for k in USAGE_KEYS}
    best = sweep.best()
    points = sweep.points()
    payload = {
        "sweep": True, **totals, "wall_seconds": round(time.monotonic() - started, 3),
        "metrics": best[1].summary["metrics"] if best else {}, "lock": str(lock) if lock else None,
        "predicted": predicted, "runs": rows, "points": [p.as_dict() for p in points],
        "best": sweep.summary().get("best"),
    }
    lines = [markdown_table(points, point_label), ""]
    if best is not None:
        lines.append(f"best: {point_label(best[1].point.settings)} (seed {best[1].point.seed}), "
                     f"run {best[1].run_dir}")
    lines += [
        f"backend calls: {totals['backend_calls']} (cache hits {totals['cache_hits']}), tokens: "
        f"{totals['prompt_tokens']} prompt + {totals['completion_tokens']} completion, "
        f"{payload['wall_seconds']:.1f}s",
        f"predicted: {predicted['backend_calls']} calls, {predicted['prompt_tokens']} prompt + "
        f"{predicted['completion_tokens']} completion tokens",
        f"learned prompts (best run) and sweep summary: {lock}",
    ]
    a.emit(payload, "\n".join(lines))
