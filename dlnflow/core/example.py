"""An example of a data set: one input and its correct output."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One input and its correct output."""

    input: str
    target: str
