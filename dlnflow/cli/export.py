"""``dlnflow export``: write a trained network as a program for another framework (DSPy)."""

from __future__ import annotations

from pathlib import Path

import click

from dlnflow.cli.common import SPEC_ARG
from dlnflow.cli.context import app
from dlnflow.export import to_dspy

TARGETS = ("dspy",)


@click.command("export")
@SPEC_ARG
@click.option("--to", "target", type=click.Choice(TARGETS), required=True,
              help="What to export to: dspy writes a DSPy program.")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite the exported files in an OUT folder that is not empty.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (as the global --json does).")
@click.pass_context
def export(ctx: click.Context, spec: Path, target: str, out: Path, force: bool, as_json: bool) -> None:
    """Write SPEC's network, with its learned prompts, as a program in the folder OUT.

    With --to dspy, OUT gets program.py (one dspy.Signature per layer carrying the learned
    instruction, a dspy.Module chaining them, an adapter that renders prompts exactly as
    dlnflow's templates do), program.json (the instructions as data) and README.md (how to run
    it against an OpenAI-compatible server, and what the mapping leaves out). The prompts come
    from the lock file beside SPEC when there is one, else from the spec. OUT must be empty
    unless --force is given. Exit code 2 for a bad spec or lock, a template the program cannot
    reproduce, or a non-empty OUT.

    \b
    Examples:
      dlnflow export pipelines/quickstart.yaml --to dspy exported/quickstart
      dlnflow export pipelines/quickstart.yaml --to dspy exported/quickstart --force --json
      python exported/quickstart/program.py --api-base http://127.0.0.1:8000/v1 "sparrow"
    """

    a = app(ctx)
    a.as_json = a.as_json or as_json
    if not spec.exists():
        raise click.BadParameter(f"no such file: {spec}", param_hint="SPEC")
    result = to_dspy.export_dspy(spec, out, force=force)
    plan = result.plan
    available = to_dspy.dspy_available()
    source = (f"learned prompts from {plan.lock_file}" if plan.lock_file
              else f"the prompts written in {plan.spec_file} (no lock file beside it)")
    payload = {
        "ok": True,
        "to": target,
        "out": str(result.out),
        "files": [str(p) for p in result.files],
        "instructions_from": plan.instructions_from,
        "lock": plan.lock_file,
        "layers": {p.name: p.instruction for p in plan.layers},
        "warnings": plan.warnings,
        "dspy_available": available,
    }
    for warning in plan.warnings:
        a.info(f"warning: {warning}")
    lines = [f"wrote {', '.join(str(p) for p in result.files)}", f"instructions: {source}",
             f'run it: python {result.out / "program.py"} --api-base http://127.0.0.1:8000/v1 "some input"']
    if not available:
        lines.append("hint: dspy is not installed here; pip install -e '.[dspy]' to run the exported program")
    a.emit(payload, "\n".join(lines))
