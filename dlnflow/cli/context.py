"""What every command shares: global options, the cache, and building a client."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from dlnflow._util.redact import redact, redact_data
from dlnflow.cli.render import paint, use_color
from dlnflow.runtime.location import default_cache_dir


@dataclass
class AppContext:
    """Global options, as plain data."""

    cache_dir: str | None = None
    cache_mode: str = "use"
    cache_remote: str | None = None
    as_json: bool = False
    verbosity: int = 0

    def resolve_cache_dir(self, near: Path | None = None) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return default_cache_dir(near)

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    @property
    def color(self) -> bool:
        """Colour on stderr: only on a terminal, never with NO_COLOR (https://no-color.org)."""
        return use_color(sys.stderr)

    def warn(self, message: str) -> None:
        """A warning on stderr (kept with -q; silent with --json, whose payload carries it)."""
        if not self.as_json:
            color = self.color
            click.echo(f"{paint('warning:', 'warning', color)} {redact(message)}", err=True, color=color)

    def info(self, message: str) -> None:
        """A progress or status line on stderr (silent with -q or --json)."""
        if not self.quiet and not self.as_json:
            click.echo(redact(message), err=True)

    def emit(self, payload: Any, text: str | None = None) -> None:
        """The command's result: JSON on stdout with --json, else ``text``."""
        if self.as_json:
            click.echo(json.dumps(redact_data(payload), indent=2, sort_keys=True, ensure_ascii=False))
        elif text is not None:
            click.echo(redact(text))


def app(ctx: click.Context) -> AppContext:
    obj = ctx.find_object(AppContext)
    return obj if obj is not None else AppContext()
