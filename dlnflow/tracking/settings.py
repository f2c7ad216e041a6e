"""Whether and where to track: ``--track``, the spec's ``tracking`` section, ``$DLNFLOW_TRACKING_URI``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dlnflow._util.paths import find_project_root
from dlnflow.core.errors import InputError
from dlnflow.spec.pipeline import Pipeline

ENV_URI = "DLNFLOW_TRACKING_URI"
CHOICES = ("mlflow", "none")


@dataclass(frozen=True)
class TrackingSettings:
    """Where to log: the backend, its URI and the experiment name."""

    backend: str
    uri: str
    experiment: str


def _uri_from_spec(value: str, spec_dir: Path) -> str:
    """A URI as written, or a plain path as an SQLite database relative to the spec.

    >>> _uri_from_spec("runs/mlflow.db", Path("/work/pipelines"))
    'sqlite:////work/pipelines/runs/mlflow.db'
    >>> _uri_from_spec("http://127.0.0.1:5000", Path("/work/pipelines"))
    'http://127.0.0.1:5000'
    """
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value):
        return value
    return f"sqlite:///{(spec_dir / value).resolve()}"


def tracking_settings(pipeline: Pipeline, track: str | None = None) -> TrackingSettings | None:
    """The tracking a command should do (``None``: none), from ``--track``, the spec and the environment."""
    section = pipeline.spec.get("tracking") or {}
    if track is not None and track not in CHOICES:
        raise InputError(f"--track {track!r}: choose one of {', '.join(CHOICES)}")
    backend = track if track is not None else section.get("backend")
    if backend in (None, "none"):
        return None
    spec_dir = pipeline.spec_path.parent
    uri = os.environ.get(ENV_URI) or (_uri_from_spec(section["uri"], spec_dir) if section.get("uri") else None)
    if not uri:
        uri = f"sqlite:///{find_project_root(spec_dir) / 'mlflow.db'}"
    return TrackingSettings(str(backend), uri, str(section.get("experiment") or pipeline.name))
