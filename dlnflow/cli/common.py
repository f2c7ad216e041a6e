"""Helpers shared by the commands that load a spec and bind it to models."""

from __future__ import annotations

from pathlib import Path

import click

from dlnflow.api import network
from dlnflow.api.network import Network
from dlnflow.cli.context import AppContext

SPEC_ARG = click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))


def open_network(app: AppContext, spec: Path) -> Network:
    """Compile ``spec`` (exit 2 on any problem) and bind it to the cache chosen by the global options."""
    if not spec.exists():
        raise click.BadParameter(f"no such file: {spec}", param_hint="SPEC")
    return network.open_network(spec, app.resolve_cache_dir(spec.parent), app.cache_mode,
                                cache_remote=app.cache_remote or "")


def use_lock(app: AppContext, net: Network, strict: bool) -> None:
    """Load the lock's prompts (with a sweep's best-run settings) and say what was used."""
    drifted = net.use_lock(strict=strict)
    (app.warn if drifted else app.info)(net.lock_note)
    best = net.best_run
    if best is not None:
        (app.warn if best.problem else app.info)(best.note())


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"
