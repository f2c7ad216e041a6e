"""``dlnflow init``: write a commented starter spec and a tiny data file."""

from __future__ import annotations

from pathlib import Path

import click

from dlnflow.cli.context import app
from dlnflow.scaffold.starter import DEFAULT_CLASSES, parse_classes, scaffold


@click.command("init")
@click.argument("name")
@click.option("--layers", type=click.Choice(["1", "2"]), default="1", show_default=True,
              help="1: one classifying layer trained with DLN-1; "
                   "2: a hidden layer too, trained with DLN-2 (vi).")
@click.option("--classes", metavar="A,B,...", help="Output classes, comma-separated [default: animal,fruit].")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              help="Folder to write into [default: the current folder].")
@click.pass_context
def init(ctx: click.Context, name: str, layers: str, classes: str | None, folder: Path) -> None:
    """Write NAME.yaml (a commented starter spec) and NAME.jsonl (a small data set).

    The spec starts with the yaml-language-server modeline, so editors complete and
    explain its keys. The data is a dozen generated rows per class, a placeholder to
    replace with your own examples. Existing files are never overwritten (exit 2).
    The result validates and trains at once on the embedded model.

    \b
    Examples:
      dlnflow init demo && dlnflow validate demo.yaml && dlnflow train demo.yaml
      dlnflow init sentiment --classes positive,negative
      dlnflow init deep --layers 2 --dir pipelines
    """

    a = app(ctx)
    chosen = parse_classes(classes) if classes is not None else DEFAULT_CLASSES
    made = scaffold(name, folder, int(layers), chosen)
    payload = {"spec": str(made.spec), "data": str(made.data), "classes": list(made.classes),
               "layers": made.layers}
    a.emit(payload, "\n".join([
        f"wrote {made.spec} ({made.layers} layer{'s' if made.layers > 1 else ''}, "
        f"classes {', '.join(made.classes)})",
        f"wrote {made.data} (placeholder data: replace it with your own examples)",
        "next:",
        f"  dlnflow validate {made.spec}",
        f"  dlnflow train {made.spec}",
    ]))
