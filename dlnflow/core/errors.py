"""The exception hierarchy.

Raising is separate from rendering: code raises these with structured fields, and
only the CLI (:mod:`dlnflow.cli`) turns them into text and an exit code.

- :class:`InputError` (exit code 2): the user's spec, data, template or command line is wrong.
- :class:`RuntimeFault` (exit code 1): the job failed while running (backend down, budget hit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Styler = Callable[[str, str], str]
"""``styler(text, role)`` decorates one part of a rendered problem; roles: location, hint, caret."""


def _plain(text: str, role: str) -> str:
    return text


@dataclass(frozen=True)
class Problem:
    """One located problem in a user's file.

    >>> p = Problem("spec.yaml", 3, 5, "/layers/0/name", "expected a string")
    >>> p.render()
    'spec.yaml:3:5: expected a string [/layers/0/name]'
    """

    file: str
    line: int
    col: int
    pointer: str
    message: str
    source_line: str | None = None
    hint: str | None = None

    def render(self, with_source: bool = False, style: Styler = _plain) -> str:
        loc = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        text = f"{style(loc, 'location')}: {self.message}"
        if self.pointer:
            text += f" [{self.pointer or '/'}]"
        if self.hint:
            text += f"\n  {style('hint:', 'hint')} {self.hint}"
        if with_source and self.source_line is not None and self.line:
            caret = " " * max(self.col - 1, 0) + style("^", "caret")
            text += f"\n  {self.source_line}\n  {caret}"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "pointer": self.pointer,
            "message": self.message + (f" (hint: {self.hint})" if self.hint else ""),
        }


class DlnflowError(Exception):
    """Base of every error dlnflow raises on purpose."""

    exit_code = 1


class InputError(DlnflowError):
    """Bad input from the user: spec, data, template, model settings, CLI usage."""

    exit_code = 2


class SpecError(InputError):
    """One or more located problems in a spec file (all of them, not just the first)."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


class DataError(InputError):
    """A data file is missing, empty or malformed. ``problems`` carries locations when known."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)


class TemplateError(InputError):
    """A template does not parse, or uses something the sandbox forbids."""


class ConfigError(InputError):
    """A model or backend is misconfigured (missing key, wrong file, missing capability)."""


class LockError(InputError):
    """The lock file is unreadable or does not match the spec under ``--strict``."""


class RuntimeFault(DlnflowError):
    """The job failed while running."""

    exit_code = 1


class BackendError(RuntimeFault):
    """A model backend failed after its retries."""


class ContextOverflow(BackendError):
    """A prompt does not fit the model's context window; the caller may shorten it and retry."""

    def __init__(self, n_tokens: int, n_ctx: int, detail: str = ""):
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx
        msg = f"prompt of {n_tokens} tokens does not fit the context window of {n_ctx} tokens"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class BudgetExceeded(RuntimeFault):
    """The next backend calls would exceed ``train.budget``; nothing over budget was spent."""
