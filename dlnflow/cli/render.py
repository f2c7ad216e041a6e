"""Turning errors into messages and exit codes (the only place that does)."""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any, TextIO

import click

from dlnflow._util.redact import redact, redact_data
from dlnflow.core.errors import DataError, DlnflowError, SpecError
from dlnflow.runtime.remote import RemoteCacheWarning


ROLES: dict[str, dict[str, Any]] = {
    "error": {"fg": "red", "bold": True},
    "warning": {"fg": "yellow", "bold": True},
    "ok": {"fg": "green"},
    "location": {"bold": True},
    "hint": {"fg": "cyan"},
    "caret": {"fg": "red", "bold": True},
}
"""How each part of the output is coloured, as plain data."""


def use_color(stream: TextIO | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set to a non-empty value.

    >>> import io
    >>> use_color(io.StringIO(), {})
    False
    """
    stream = sys.stderr if stream is None else stream
    env = os.environ if env is None else env
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not env.get("NO_COLOR")


def paint(text: str, role: str, color: bool) -> str:
    """``text`` in the colours of ``role`` when ``color`` is on, else unchanged.

    >>> paint("error:", "error", False)
    'error:'
    >>> paint("error:", "error", True)
    '\\x1b[31m\\x1b[1merror:\\x1b[0m'
    """
    return click.style(text, **ROLES[role]) if color else text


def error_payload(exc: DlnflowError) -> dict[str, Any]:
    problems = getattr(exc, "problems", None) or []
    return redact_data({
        "ok": False,
        "error": type(exc).__name__,
        "exit_code": exc.exit_code,
        "message": str(exc) if not problems else f"{len(problems)} problem(s)",
        "errors": [p.as_dict() for p in problems],
    })


def render_error(exc: DlnflowError, as_json: bool = False, color: bool = False) -> None:
    """Write ``exc`` for a person (stderr, coloured when ``color``) or a program (stdout JSON)."""
    if as_json:
        click.echo(json.dumps(error_payload(exc), indent=2, ensure_ascii=False))
        return
    if isinstance(exc, SpecError) or (isinstance(exc, DataError) and exc.problems):
        problems = exc.problems  # type: ignore[attr-defined]
        for p in problems:
            text = p.render(with_source=True, style=lambda t, r: paint(t, r, color))
            click.echo(redact(text), err=True, color=color)
        n = len(problems)
        click.echo(f"{n} problem{'s' if n != 1 else ''} found.", err=True)
        return
    click.echo(f"{paint('error:', 'error', color)} {redact(str(exc))}", err=True, color=color)


INTERRUPTED = "interrupted: every call that finished is kept in the cache; run the same command again to continue"
"""The one line printed when the user presses Ctrl-C (exit code 130, as for any program killed by SIGINT)."""


class Interrupted(Exception):
    """Ctrl-C inside a command, carried past click (which would print "Aborted!" and exit 1)."""


def run_guarded(cli: click.Group, argv: list[str] | None = None) -> Any:
    """Run ``cli`` as a program: usage errors exit 2, ours are handled in the group, Ctrl-C exits 130."""
    try:
        code = cli.main(args=argv, prog_name="dlnflow", standalone_mode=False)
    except (Interrupted, KeyboardInterrupt, click.exceptions.Abort):
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # output piped into a program that stopped reading
            sys.exit(1)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def route_warnings() -> None:
    """Show dlnflow's own warnings (such as a shared cache tier giving up) as ``warning: ...`` lines
    on stderr, each once; other warnings keep Python's default display."""
    original = warnings.showwarning
    if getattr(original, "_dlnflow", False):
        return

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        if issubclass(category, RemoteCacheWarning):
            color = use_color(sys.stderr)
            click.echo(f"{paint('warning:', 'warning', color)} {message}", err=True, color=color)
            return
        original(message, category, filename, lineno, file, line)

    show._dlnflow = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    warnings.simplefilter("always", RemoteCacheWarning)  # the tier itself warns once per cause
