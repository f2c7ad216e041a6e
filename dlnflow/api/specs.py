"""Specs from the Python API: compile, validate, draw.

>>> from dlnflow.api import specs
>>> sorted(specs.DRAW_FORMATS)
['dot', 'mermaid', 'text']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
