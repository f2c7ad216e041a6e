"""A one-line progress display on a terminal (silent elsewhere, or with -q/--json)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import click


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class ProgressLine:
    """Rewrites one status line on stderr: iteration, best dev, calls, cache hit rate, ETA."""

    def __init__(self, enabled: bool, verbose: bool = False, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.verbose = enabled and verbose and not self.tty
        self.started = time.monotonic()
        self.last = ""

    def __call__(self, event: dict[str, Any]) -> None:
        usage = event.get("usage", {})
        stats = f"calls {usage.get('backend_calls', 0)} | cache {100 * usage.get('hit_rate', 0.0):.0f}%"
        if event["event"] == "iteration":
            it, total = event["iteration"], event["total"]
            elapsed = time.monotonic() - self.started
            eta = elapsed / max(it - 1, 1) * (total - it + 1) if it > 1 else 0.0
            text = (f"iteration {it}/{total} | best dev {event['best_dev']:.3f} | {stats}"
                    + (f" | ETA {_fmt_seconds(eta)}" if it > 1 else ""))
        elif event["event"] == "eval":
            text = f"evaluating {event['split']} {event['done']}/{event['total']} | {stats}"
        else:
            return
        self._show(text)

    def _show(self, text: str) -> None:
        if self.tty:
            pad = max(len(self.last) - len(text), 0)
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self.last = text
        elif self.verbose and text.startswith("iteration"):
            click.echo(text, err=True)

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\r" + " " * len(self.last) + "\r")
            self.stream.flush()
