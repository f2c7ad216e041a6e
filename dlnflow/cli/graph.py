"""``dlnflow graph``: draw a pipeline's layers and how they are wired."""

from __future__ import annotations

import click

from dlnflow.api import specs
from dlnflow.cli.context import app


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(sorted(specs.DRAW_FORMATS)), default="text", show_default=True,
              help="text: an indented outline; mermaid: a Mermaid flowchart; dot: Graphviz.")
@click.pass_context
def graph(ctx: click.Context, spec: str, fmt: str) -> None:
    """Show a pipeline's layers: template, model, output classes and the inputs each reads.

    The dataset input is 'x'. When 'x' also feeds a later layer (a residual connection,
    as in DLN-2) that edge is drawn dashed and labelled 'residual'. The spec is validated
    first; problems are reported as by 'dlnflow validate' (exit code 2).

    \b
    Examples:
      dlnflow graph pipelines/navigate-dln2.yaml
      dlnflow graph pipelines/navigate-dln2.yaml --format mermaid > graph.mmd
      dlnflow graph pipelines/navigate-dln2.yaml --format dot | dot -Tpng -o graph.png
    """
    payload, text = specs.draw(spec, fmt)
    app(ctx).emit(payload, text)
