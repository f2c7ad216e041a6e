"""A loaded spec document: its data and where every value came from (line, column)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnflow._util.pointers import parent
from dlnflow.core.errors import Problem


@dataclass
class Document:
    """A loaded spec: plain data plus positions (1-based) of every value and mapping key."""

    file: str
    path: Path
    text: str
    data: Any
    values: dict[str, tuple[int, int]] = field(default_factory=dict)
    keys: dict[str, tuple[int, int]] = field(default_factory=dict)
    styles: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the spec are resolved against."""
        return self.path.resolve().parent

    def locate(self, ptr: str, key: bool = False) -> tuple[int, int]:
        """``(line, col)`` of the value at ``ptr`` (of its key when ``key``), else of the nearest parent."""
        probe = ptr
        while True:
            if key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return (1, 1)
            probe = parent(probe)

    def source_line(self, line: int) -> str | None:
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else None

    def problem(self, ptr: str, message: str, *, key: bool = False, hint: str | None = None) -> Problem:
        """A :class:`Problem` located at ``ptr`` (at its key when ``key`` is true)."""
        line, col = self.locate(ptr, key=key)
        return Problem(self.file, line, col, ptr, message, self.source_line(line), hint)


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in file order, without exact repeats."""
    seen: set[tuple[Any, ...]] = set()
    out: list[Problem] = []
    for p in problems:
        ident = (p.file, p.line, p.col, p.pointer, p.message)
        if ident not in seen:
            seen.add(ident)
            out.append(p)
    return sorted(out, key=lambda p: (p.file, p.line, p.col, p.pointer))


