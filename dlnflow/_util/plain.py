"""Plain data: what YAML and JSON can hold, from dataclasses, paths, tuples and numpy scalars."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path  # noqa: F401  (used by the doctest)
from typing import Any


def plain(value: Any) -> Any:
    """``value`` as YAML-safe plain data: dicts, lists, str, int, float, bool, None.

    Tuples become lists, paths and unknown objects their text, numpy scalars Python numbers.

    >>> plain({"a": (1, 2), "b": Path("x")})
    {'a': [1, 2], 'b': 'x'}
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return plain(value.item())
    return str(value)
