"""Where a project's folders are."""

from __future__ import annotations

from pathlib import Path


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding ``pyproject.toml`` or ``.git``; else ``start``."""
    start = start.resolve()
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return start
