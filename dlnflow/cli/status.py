"""``dlnflow status``: does the lock file still match the spec?"""

from __future__ import annotations

from pathlib import Path

import click

from dlnflow.api.network import lock_status
from dlnflow.cli.common import SPEC_ARG, open_network
from dlnflow.cli.context import app
from dlnflow.core.errors import LockError


@click.command("status")
@SPEC_ARG
@click.option("--strict", is_flag=True, help="Exit 2 when the lock is missing or drifted.")
@click.pass_context
def status(ctx: click.Context, spec: Path, strict: bool) -> None:
    """Say whether SPEC's lock file matches the spec, and name what drifted.

    Compares templates, initial prompts, model identities, data and hyperparameters with
    what the lock file recorded when the prompts were learned.

    \b
    Examples:
      dlnflow status pipelines/quickstart.yaml
      dlnflow status --strict pipelines/quickstart.yaml   # for CI: fail on drift
    """
    a = app(ctx)
    with open_network(a, spec) as net:
        payload = lock_status(net)
    path = Path(payload["lock"])
    if not payload["exists"]:
        a.emit(payload, f"{path.name}: no lock file yet (run `dlnflow train {spec}`)")
        if strict:
            raise LockError(f"{path} does not exist")
        return
    drifted = payload["drift"]
    if drifted:
        text = f"{path.name} drifted from the spec:\n" + "\n".join(f"  - {d}" for d in drifted)
    else:
        text = f"{path.name} matches the spec; learned prompts:\n" + "\n".join(
            f"  {name}: {layer.get('prompt', '')!r}" for name, layer in sorted(payload.pop("layers").items()))
    payload.pop("layers", None)
    a.emit(payload, text)
    if drifted and strict:
        raise LockError(f"{path.name} drifted: " + "; ".join(drifted))
