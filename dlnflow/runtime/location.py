"""Where the call cache lives (without opening it, so commands that only need the path stay light)."""

from __future__ import annotations

import os
from pathlib import Path

from dlnflow._util.paths import find_project_root

ENV_VAR = "DLNFLOW_CACHE_DIR"
DB_NAME = "cache.db"


def default_cache_dir(start: Path | None = None) -> Path:
    """``$DLNFLOW_CACHE_DIR`` if set, else ``cache/`` at the project root above ``start``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return find_project_root(start or Path.cwd()) / "cache"
