"""``dlnflow run``: answer new inputs with the learned prompts."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dlnflow.core.bounded import DATA_BYTES, lone_surrogate

from dlnflow.cli.common import SPEC_ARG, open_network, use_lock
from dlnflow.cli.context import app


@click.command("run")
@SPEC_ARG
@click.option("--input", "inputs", multiple=True, help="An input text (repeatable).")
@click.option("--file", "file", type=click.Path(dir_okay=False, allow_dash=True),
              help="A file with one input per line ('-' for stdin).")
@click.option("--strict", is_flag=True, help="Refuse to run when the lock file drifted from the spec.")
@click.option("--trace", is_flag=True, help="Also print every hidden layer's text.")
@click.pass_context
def run(ctx: click.Context, spec: Path, inputs: tuple[str, ...], file: str | None, strict: bool,
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
    texts = [check_input(text) for text in inputs]
    if file is not None:
        texts.extend(read_inputs(file))
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


def check_input(text: str) -> str:
    """One ``--input``: refused when empty or not valid text (bytes that are not UTF-8 on the command line)."""
    if not text.strip():
        raise click.BadParameter("an input is empty; every input needs some text (data files refuse empty "
                                 "inputs too)", param_hint="'--input'")
    found = lone_surrogate(text)
    if found is not None:
        shown = found[1]
        raise click.BadParameter(f"{shown!r} is not valid UTF-8 text; pass inputs encoded as UTF-8",
                                 param_hint="'--input'")
    return text


def read_inputs(file: str) -> list[str]:
    """The non-blank lines of ``file`` (``-``: standard input), decoded as UTF-8."""
    if file == "-":
        stream = sys.stdin
        if stream is None or stream.closed:
            raise click.BadParameter("standard input is closed; pipe the inputs in, or give a file",
                                     param_hint="'--file'")
        name = "standard input"
        try:
            raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode("utf-8")
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"cannot read standard input: {exc}", param_hint="'--file'") from None
    else:
        name = file
        try:
            with open(file, "rb") as handle:
                raw = handle.read(DATA_BYTES + 1)
        except OSError as exc:
            raise click.BadParameter(f"{file}: {exc.strerror or exc}", param_hint="'--file'") from None
        if len(raw) > DATA_BYTES:
            raise click.BadParameter(f"{file}: larger than {DATA_BYTES // 2**20} MB", param_hint="'--file'")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{name}: not valid UTF-8 ({exc.reason}, byte 0x{raw[exc.start]:02x} at offset "
                                 f"{exc.start}); save the file as UTF-8 text", param_hint="'--file'") from None
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]
