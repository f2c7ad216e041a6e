"""``dlnflow status``: does the lock file still match the spec?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dlnflow.cli.common import open_network
from dlnflow.cli.context import AppContext, app
from dlnflow.errors import InputError, LockError

LOCK_SUFFIX = ".lock.yaml"
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def spec_for(path: Path) -> Path:
    """``path`` itself, or for a lock file ``X.lock.yaml`` the spec ``X.yaml|yml|json`` beside it."""
    if not path.name.endswith(LOCK_SUFFIX):
        return path
    stem = path.name[: -len(LOCK_SUFFIX)]
    for suffix in SPEC_SUFFIXES:
        spec = path.with_name(stem + suffix)
        if spec.is_file():
            return spec
    names = ", ".join(stem + s for s in SPEC_SUFFIXES)
    raise InputError(f"{path}: no spec beside this lock file (looked for {names}); "
                     "a lock file lives next to the spec it was learned for")


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
    payloads = [_check(a, spec) for spec in resolved]
    a.emit(payloads[0] if len(payloads) == 1 else payloads, "\n".join(p.pop("text") for p in payloads))
    failed = [p for p in payloads if not p["clean"]]
    if strict and failed:
        raise LockError("; ".join(_why(p) for p in failed))


def _why(payload: dict[str, Any]) -> str:
    if not payload["exists"]:
        return f"{payload['lock']} does not exist"
    return f"{Path(payload['lock']).name} drifted: " + "; ".join(payload["drift"])


def _check(a: AppContext, spec: Path) -> dict[str, Any]:
    """The status of one spec: the JSON payload, with its text under ``text``."""
    from dlnflow import lock as lockmod

    with open_network(a, spec) as net:
        path = net.pipeline.lock_path
        data = lockmod.read_lock(path)
        if data is None:
            return {"lock": str(path), "exists": False, "drift": [], "clean": False,
                    "text": f"{path.name}: no lock file yet (run `dlnflow train {spec}`)"}
        drifted = lockmod.drift(net.pipeline, data, net.identities(), net.dataset.digest)
        if drifted:
            text = f"{path.name} drifted from the spec:\n" + "\n".join(f"  - {d}" for d in drifted)
        else:
            text = f"{path.name} matches the spec; learned prompts:\n" + "\n".join(
                f"  {name}: {layer.get('prompt', '')!r}" for name, layer in sorted(data.get("layers", {}).items()))
        return {"lock": str(path), "exists": True, "drift": drifted, "clean": not drifted,
                "metrics": data.get("metrics", {}), "text": text}
