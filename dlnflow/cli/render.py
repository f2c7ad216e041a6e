"""Turning errors into messages and exit codes (the only place that does)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from dlnflow.errors import DataError, DlnflowError, SpecError


def error_payload(exc: DlnflowError) -> dict[str, Any]:
    problems = getattr(exc, "problems", None) or []
    return {
        "ok": False,
        "error": type(exc).__name__,
        "exit_code": exc.exit_code,
        "message": str(exc) if not problems else f"{len(problems)} problem(s)",
        "errors": [p.as_dict() for p in problems],
    }


def render_error(exc: DlnflowError, as_json: bool = False) -> None:
    """Write ``exc`` for a person (stderr) or a program (stdout JSON)."""
    if as_json:
        click.echo(json.dumps(error_payload(exc), indent=2, ensure_ascii=False))
        return
    if isinstance(exc, SpecError) or (isinstance(exc, DataError) and exc.problems):
        problems = exc.problems  # type: ignore[attr-defined]
        for p in problems:
            click.echo(p.render(with_source=True), err=True)
        n = len(problems)
        click.echo(f"{n} problem{'s' if n != 1 else ''} found.", err=True)
        return
    click.echo(f"error: {exc}", err=True)


def run_guarded(cli: click.Group, argv: list[str] | None = None) -> Any:
    """Run ``cli`` as a program: click handles usage errors (exit 2); ours are handled in the group."""
    try:
        return cli.main(args=argv, prog_name="dlnflow", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        click.echo("interrupted; everything computed so far is in the cache", err=True)
        sys.exit(130)
