"""Run directories: where a training run's log and summary go.

Layout: ``runs/<pipeline name>/<run id>/`` at the project root (beside ``cache/``), where the
run id is ``seed<N>-<8 hex>`` from the hyperparameters, the spec's path (relative to the project
root) and the data's content digest (:func:`run_dir`), so the same settings always land in the
same folder and two specs sharing a ``name`` (or one spec on other data) never share one. Inside:

- ``log.jsonl``: one JSON object per iteration (candidates with scores, chosen prompt, losses,
  dev accuracy, calls and tokens so far). It is written as ``log.jsonl.partial`` while the run
  is going (each line flushed) and renamed when the run ends, so a killed run never leaves a
  file that looks complete.
- ``summary.json``: the final result, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import IO, Any

from dlnflow.cache import canonical_json, find_project_root, make_private_dir
from dlnflow.files import write_atomic, write_error
from dlnflow.redact import redact_data


def run_id(seed: int, hyperparameters: dict[str, Any]) -> str:
    digest = hashlib.sha256(canonical_json(hyperparameters).encode()).hexdigest()[:8]
    return f"seed{seed}-{digest}"


def spec_identity(spec_path: Path) -> str:
    """The spec's path relative to its project root (the same wherever the checkout lives)."""
    resolved = Path(spec_path).resolve()
    return Path(os.path.relpath(resolved, find_project_root(resolved.parent))).as_posix()


def run_dir(spec_path: Path, name: str, seed: int, hyperparameters: dict[str, Any], data_digest: str,
            overrides: dict[str, Any] | None = None) -> Path:
    """``runs/<name>/seed<N>-<hash>``: the hash covers the hyperparameters, ``overrides`` (settings
    outside ``train`` a sweep replaced), the spec's path and the data digest."""
    body: dict[str, Any] = {**hyperparameters, "spec": spec_identity(spec_path), "data_sha256": data_digest}
    if overrides:
        body["overrides"] = overrides
    return runs_root(spec_path) / name / run_id(seed, body)


def runs_root(spec_path: Path) -> Path:
    env = os.environ.get("DLNFLOW_RUNS_DIR")
    if env:
        return Path(env).expanduser()
    return find_project_root(spec_path.parent) / "runs"


def _owner_only(path: str, flags: int) -> int:
    """``open`` opener creating files readable by their owner only (0600)."""
    return os.open(path, flags, 0o600)


class RunLog:
    """A run directory with a line-per-iteration log."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.partial = directory / "log.jsonl.partial"
        self.final = directory / "log.jsonl"
        try:
            make_private_dir(directory)
            self._fh: IO[str] | None = open(self.partial, "w", encoding="utf-8", opener=_owner_only)
        except OSError as exc:
            raise write_error(self.partial, exc, "set DLNFLOW_RUNS_DIR to a writable folder for run logs") from None

    def write(self, record: dict[str, Any]) -> None:
        assert self._fh is not None
        try:
            self._fh.write(json.dumps(redact_data(record), ensure_ascii=False, sort_keys=True) + "\n")
            self._fh.flush()
        except OSError as exc:
            raise write_error(self.partial, exc) from None

    def finish(self, summary: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
        try:
            os.replace(self.partial, self.final)
        except OSError as exc:
            raise write_error(self.final, exc) from None
        write_atomic(self.directory / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def abandon(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_log(directory: Path) -> list[dict[str, Any]]:
    path = directory / "log.jsonl"
    if not path.exists():
        path = directory / "log.jsonl.partial"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
