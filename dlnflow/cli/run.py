"""``dlnflow run``: answer new inputs with the learned prompts."""

from __future__ import annotations

from pathlib import Path

import click

from dlnflow.cli.common import SPEC_ARG, open_network, use_lock
from dlnflow.cli.context import app


@click.command("run")
@SPEC_ARG
@click.option("--input", "inputs", multiple=True, help="An input text (repeatable).")
@click.option("--file", "file", type=click.File("r", encoding="utf-8"),
              help="A file with one input per line ('-' for stdin).")
@click.option("--strict", is_flag=True, help="Refuse to run when the lock file drifted from the spec.")
@click.option("--trace", is_flag=True, help="Also print every hidden layer's text.")
@click.pass_context
def run(ctx: click.Context, spec: Path, inputs: tuple[str, ...], file: click.File | None, strict: bool,
        trace: bool) -> None:
    """Run SPEC on new inputs and print one output per input.

    Uses the learned prompts from SPEC's lock file when there is one; when a sweep wrote
    it, with the settings of its best run (all but `train.*`, which only training reads).

    \b
    Examples:
      dlnflow run pipelines/quickstart.yaml --input sparrow --input mango
      printf 'sparrow\\nmango\\n' | dlnflow run pipelines/quickstart.yaml --file -
    """
    a = app(ctx)
    texts = list(inputs)
    if file is not None:
        try:
            texts.extend(line.rstrip("\n") for line in file if line.strip())  # type: ignore[attr-defined]
        except UnicodeDecodeError as exc:
            name = getattr(file, "name", "the file")
            raise click.BadParameter(f"{name}: not valid UTF-8 ({exc.reason}); save the file as UTF-8 text",
                                     param_hint="'--file'") from None
    if not texts:
        raise click.UsageError("give at least one --input TEXT or --file F")
    with open_network(a, spec) as net:
        use_lock(a, net, strict)
        result = net.pipeline.graph.forward(net.client, texts)
        rows = [{"input": v["x"], "output": v[result.output],
                 **({"trace": {k: t for k, t in v.items() if k not in ("x", result.output)}} if trace else {})}
                for v in result.values]
        lines = []
        for row in rows:
            if trace:
                for k, t in row.get("trace", {}).items():
                    lines.append(f"  [{k}] {t}")
            lines.append(f"{row['input']}\t{row['output']}")
        best = net.best_run.as_dict() if net.best_run is not None else None
        a.emit({"outputs": rows, "lock_note": net.lock_note, "best_run": best}, "\n".join(lines))
