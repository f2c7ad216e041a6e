"""Protocols the layers meet at: what a caller of models and an optimizer must offer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from dlnflow.core.backend import Request, Result


class Caller(Protocol):
    """Runs requests on a named model (the runtime's client is one; a dry run has another)."""

    def run(self, model: str, requests: Sequence[Request]) -> list[Result]: ...


class Optimizer(Protocol):
    """A training method.

    ``iterative`` says whether the trainer calls :meth:`step` (``False``: everything happens in
    :meth:`prepare`, as for the baselines). Both return a JSON-serialisable record for the run log.
    """

    iterative: bool

    def prepare(self) -> dict[str, Any]: ...

    def step(self, iteration: int) -> dict[str, Any]: ...


class RunTracker(Protocol):
    """Hears a training run as it goes (an experiment tracker such as MLflow).

    The trainer hands it every log record, then the finished summary (or why the run failed);
    a sweep hands a run it skipped, because it finished earlier, to :meth:`replay`. A tracker
    never raises: tracking must not change or fail training.
    """

    def record(self, record: dict[str, Any]) -> None: ...

    def finished(self, summary: dict[str, Any], run_dir: Path, lock: Path | None) -> None: ...

    def failed(self, why: str, run_dir: Path) -> None: ...

    def replay(self, run_dir: Path) -> None: ...
