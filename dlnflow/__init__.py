"""dlnflow: Deep Language Networks as declarative pipelines."""

from __future__ import annotations

__version__ = "0.1.0"
