"""Model backends. ``make_backend`` builds one from a spec's ``models.<name>`` entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlnflow.backends.base import Backend, Request, Result
from dlnflow.errors import ConfigError

__all__ = ["Backend", "Request", "Result", "make_backend"]


def make_backend(settings: dict[str, Any], base_dir: Path | None = None) -> Backend:
    """Build the backend a ``models.<name>`` mapping describes (imports lazily)."""
    kind = settings.get("backend", "llamacpp")
    if kind == "llamacpp":
        from dlnflow.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend.from_settings(settings, base_dir)
    if kind == "openai":
        from dlnflow.backends.openai import OpenAIBackend

        return OpenAIBackend.from_settings(settings, base_dir)
    raise ConfigError(f"unknown backend {kind!r}; use 'llamacpp' or 'openai'")
