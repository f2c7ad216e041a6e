"""Model backends. :func:`make_backend` builds one from a spec's ``models.<name>`` entry.

Which class serves a ``backend:`` name is looked up in :data:`dlnflow.core.registry.BACKENDS`:
the built-in ``llamacpp`` and ``openai``, and any class a user adds with
:func:`~dlnflow.core.registry.register_backend`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlnflow.core.backend import Backend, Request, Result
from dlnflow.core.registry import BACKENDS

__all__ = ["Backend", "Request", "Result", "make_backend"]


def make_backend(settings: dict[str, Any], base_dir: Path | None = None) -> Backend:
    """Build the backend a ``models.<name>`` mapping describes (its module is imported on first use)."""
    kind = settings.get("backend", "llamacpp")
    backend: Backend = BACKENDS.get(kind).from_settings(settings, base_dir)
    return backend
