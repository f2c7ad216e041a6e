"""``dlnflow validate``: check specs without running anything."""

from __future__ import annotations

import sys

import click

from dlnflow.api import specs as spec_api
from dlnflow.cli.context import app
from dlnflow.cli.render import paint, render_error, use_color
from dlnflow.core.errors import DlnflowError, Problem, SpecError


@click.command()
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@click.pass_context
def validate(ctx: click.Context, specs: tuple[str, ...]) -> None:
    """Check pipeline specs against the schema and the wiring rules; no model is loaded.

    Every problem of every file is reported at once as FILE:LINE:COL, with the JSON
    pointer of the offending value, the source line and a hint. Exit code 0 when all
    specs are valid, 2 otherwise. Lock files (*.lock.yaml) among the arguments are
    skipped. With the global --json flag, prints a JSON list of problems
    ({file, line, col, pointer, message}); the list is empty when all are valid.

    \b
    Examples:
      dlnflow validate pipelines/*.yaml
      dlnflow --json validate my-pipeline.json
    """
    state = app(ctx)
    color = use_color(sys.stdout)
    problems: list[Problem] = []
    bad = checked = 0
    for spec in specs:
        if spec_api.is_lock_file(spec):  # so that `dlnflow validate pipelines/*.yaml` just works
            if not state.as_json:
                click.echo(f"skip  {spec}  (a lock file of learned prompts; 'dlnflow status' checks it)")
            continue
        checked += 1
        try:
            pipeline = spec_api.compile(spec)
        except DlnflowError as exc:
            found = list(getattr(exc, "problems", None) or []) or [Problem(spec, 0, 0, "", str(exc))]
            bad += 1
            problems.extend(found)
            if not state.as_json:
                render_error(SpecError(found), color=state.color)
            continue
        if not state.as_json:
            n = len(pipeline.graph)
            click.echo(f"{paint('ok', 'ok', color)}  {spec}  ({n} layer{'s' if n != 1 else ''}, "
                       f"method {pipeline.train.method})", color=color)
    if state.as_json:
        state.emit([p.as_dict() for p in problems])
    elif checked > 1 or bad:
        verdict = "all valid" if not bad else f"{bad} with problems ({len(problems)} in total)"
        click.echo(f"{checked} spec{'s' if checked != 1 else ''} checked: {verdict}", err=bool(bad))
    if bad:
        ctx.exit(2)
