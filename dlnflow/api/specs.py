"""Specs from the Python API: compile, validate, draw.

>>> from dlnflow.api import specs
>>> sorted(specs.DRAW_FORMATS)
['dot', 'mermaid', 'text']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlnflow.core.errors import InputError
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.draw import FORMATS, as_payload
from dlnflow.spec.draw import draw as draw_pipeline
from dlnflow.spec.pipeline import LOCK_SUFFIX, Pipeline

DRAW_FORMATS = tuple(FORMATS)


def compile(spec: str | Path) -> Pipeline:  # noqa: A001  (the verb users know)
    """Load, validate and compile ``spec``; every problem at once as a :class:`~dlnflow.core.errors.SpecError`."""
    return compile_spec(spec)


def draw(spec: str | Path, fmt: str = "text") -> tuple[dict[str, Any], str]:
    """``spec``'s layer graph as plain data and as text in ``fmt`` (text, mermaid or dot)."""
    pipeline = compile_spec(spec)
    return as_payload(pipeline), draw_pipeline(pipeline, fmt)


def is_lock_file(path: str | Path) -> bool:
    """Whether ``path`` names a lock file of learned prompts rather than a spec."""
    return str(path).endswith(LOCK_SUFFIX)


SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def spec_for(path: str | Path) -> Path:
    """``path`` itself, or for a lock file ``X.lock.yaml`` the spec ``X.yaml|yml|json`` beside it.

    Raises :class:`~dlnflow.core.errors.InputError` when a lock file has no spec beside it.
    """
    path = Path(path)
    if not is_lock_file(path):
        return path
    stem = path.name[: -len(LOCK_SUFFIX)]
    for suffix in SPEC_SUFFIXES:
        spec = path.with_name(stem + suffix)
        if spec.is_file():
            return spec
    names = ", ".join(stem + s for s in SPEC_SUFFIXES)
    raise InputError(f"{path}: no spec beside this lock file (looked for {names}); "
                     "a lock file lives next to the spec it was learned for")
