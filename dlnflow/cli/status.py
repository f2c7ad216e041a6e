"""``dlnflow status``: does the lock file still match the spec?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dlnflow.api.network import lock_status
from dlnflow.api.specs import spec_for
from dlnflow.cli.common import open_network
from dlnflow.cli.context import AppContext, app
from dlnflow.core.errors import LockError


@click.command("status")
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Exit 2 when a lock is missing or drifted.")
@click.pass_context
def status(ctx: click.Context, specs: tuple[Path, ...], strict: bool) -> None:
    """Say whether each SPEC's lock file matches the spec, and name what drifted.

    Compares templates, initial prompts, model identities, data and hyperparameters with
    what the lock file recorded when the prompts were learned. A lock file given in place
    of a spec (X.lock.yaml) stands for the spec beside it (X.yaml, X.yml or X.json), so a
    pre-commit hook can pass the lock files that changed. With several SPECs, --json
    prints a list with one entry per spec.

    \b
    Examples:
      dlnflow status pipelines/quickstart.yaml
      dlnflow status --strict pipelines/quickstart.yaml   # for CI: fail on drift
      dlnflow status --strict pipelines/*.lock.yaml
    """
    a = app(ctx)
    resolved = list(dict.fromkeys(spec_for(s) for s in specs))
    for spec in resolved:
        if not spec.exists():
            raise click.BadParameter(f"no such file: {spec}", param_hint="SPEC")
    checked = [_check(a, spec) for spec in resolved]
    payloads = [payload for payload, _ in checked]
    a.emit(payloads[0] if len(payloads) == 1 else payloads, "\n".join(text for _, text in checked))
    failed = [p for p in payloads if not p["clean"]]
    if strict and failed:
        raise LockError("; ".join(_why(p) for p in failed))


def _why(payload: dict[str, Any]) -> str:
    if not payload["exists"]:
        return f"{payload['lock']} does not exist"
    return f"{Path(payload['lock']).name} drifted: " + "; ".join(payload["drift"])


def _check(a: AppContext, spec: Path) -> tuple[dict[str, Any], str]:
    """The status of one spec: its JSON payload and its text."""
    with open_network(a, spec) as net:
        payload = lock_status(net)
    path = Path(payload["lock"])
    if not payload["exists"]:
        return payload, f"{path.name}: no lock file yet (run `dlnflow train {spec}`)"
    layers = payload.pop("layers", {})
    if payload["drift"]:
        return payload, f"{path.name} drifted from the spec:\n" + "\n".join(f"  - {d}" for d in payload["drift"])
    return payload, f"{path.name} matches the spec; learned prompts:\n" + "\n".join(
        _layer_lines(name, layer) for name, layer in sorted(layers.items()))


def _layer_lines(name: str, layer: dict[str, Any]) -> str:
    """A layer's learned prompt and, when it learned them, its demonstrations (input -> target)."""
    text = f"  {name}: {layer.get('prompt', '')!r}"
    demos = layer.get("demos")
    if isinstance(demos, list) and demos:
        shown = ", ".join(f"{d.get('input')!r} -> {d.get('target')!r}" for d in demos if isinstance(d, dict))
        text += f"\n  {name} demonstrations: {shown}"
    return text
