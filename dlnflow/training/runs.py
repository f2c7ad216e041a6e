"""Run directories: where a training run's log and summary go.

Layout: ``runs/<pipeline name>/<run id>/`` at the project root (beside ``cache/``), where the
run id is ``seed<N>-<8 hex>`` from the hyperparameters, so the same settings always land in the
same folder. Inside:

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
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from dlnflow._util.files import write_atomic
from dlnflow._util.paths import find_project_root
from dlnflow._util.plain import plain
from dlnflow.lockfile.lock import public_identity
from dlnflow.runtime.cache import canonical_json, make_private_dir
from dlnflow.spec.pipeline import Pipeline

SUMMARY = "summary.json"


def run_id(seed: int, hyperparameters: dict[str, Any]) -> str:
    digest = hashlib.sha256(canonical_json(hyperparameters).encode()).hexdigest()[:8]
    return f"seed{seed}-{digest}"


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
        make_private_dir(directory)
        self.partial = directory / "log.jsonl.partial"
        self.final = directory / "log.jsonl"
        self._fh: IO[str] | None = open(self.partial, "w", encoding="utf-8", opener=_owner_only)

    def write(self, record: dict[str, Any]) -> None:
        assert self._fh is not None
        self._fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._fh.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
        os.replace(self.partial, self.final)
        write_atomic(self.directory / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")

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


def run_dir_for(pipeline: Pipeline, overrides: dict[str, Any] | None = None) -> Path:
    """``runs/<name>/seed<N>-<hash>``: the hash covers the training hyperparameters and any override
    of a setting outside ``train`` (so two grid points never share a folder)."""
    hyper = pipeline.train.hyperparameters()
    other = {k: v for k, v in (overrides or {}).items() if not k.startswith("train.")}
    if other:
        hyper = {**hyper, "overrides": other}
    return runs_root(pipeline.spec_path) / pipeline.name / run_id(pipeline.train.seed, hyper)


def fingerprint(pipeline: Pipeline, data_digest: str) -> str:
    """sha256 of what decides a run's result: layers (template digest, prompt, wiring, decoding,
    classes), model settings (not prices), data settings and content digest, loss and hyperparameters."""
    base = pipeline.spec_path.parent
    layers = [{"name": la.name, "inputs": list(la.inputs), "template": la.template.digest,
               "prompt": la.prompt, "model": la.model, "trainable": la.trainable,
               "decoding": asdict(la.decoding), "classes": list(la.classes or [])} for la in pipeline.graph]
    data = plain(pipeline.data)
    if pipeline.data.path is not None:
        data["path"] = os.path.relpath(pipeline.data.path, base)
    models = {name: {k: v for k, v in m.items() if k != "price"} for name, m in pipeline.models.items()}
    body = {"layers": layers, "models": models, "data": data, "data_sha256": data_digest,
            "loss": pipeline.loss, "train": pipeline.train.hyperparameters()}
    return hashlib.sha256(canonical_json(plain(body)).encode()).hexdigest()


def run_config(pipeline: Pipeline, data_digest: str, data_source: str, identities: dict[str, Any],
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config`` block of a run's summary: what the run was, and enough to write its lock later."""
    return {
        "fingerprint": fingerprint(pipeline, data_digest),
        "seed": pipeline.train.seed,
        "overrides": plain(overrides or {}),
        "identities": {k: public_identity(v) for k, v in identities.items()},
        "data": {"sha256": data_digest, "source": data_source},
    }


def finished_summary(run_dir: Path, expected: str) -> dict[str, Any] | None:
    """The run's summary when it finished with fingerprint ``expected``; else ``None``."""
    path = run_dir / SUMMARY
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
        return None
    return summary if summary["config"].get("fingerprint") == expected else None
