"""Pytest plugin: a short APE training run on the real embedded model, shared by the session.

The APE test (``tests/optim/test_ape.py``) checks the run itself; the ``eval --strict`` tests
(``tests/cli/test_cli_evaluate.py``) use its lock file, which holds an induced instruction. The run
trains a variant of the shipped quickstart (see :func:`real_specs.ape_quickstart`) in a project copy
under a session temporary folder, with its own cache and runs folder there.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import copy_project
from real_specs import ape_quickstart


@dataclass(frozen=True)
class TrainedRun:
    spec: Path
    cache: Path
    runs: Path
    payload: dict[str, Any]

    @property
    def lock(self) -> Path:
        return self.spec.with_name(self.spec.stem + ".lock.yaml")

    def copy_to(self, folder: Path) -> TrainedRun:
        """The spec, its lock and the cache copied into ``folder``, for a test that changes them."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.spec, folder / self.spec.name)
        shutil.copy2(self.lock, folder / self.lock.name)
        shutil.copytree(self.cache, folder / "cache")
        return TrainedRun(folder / self.spec.name, folder / "cache", folder / "runs", self.payload)


@pytest.fixture(scope="session")
def ape_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    from dlnflow.cli import cli

    root = copy_project(tmp_path_factory.mktemp("ape"))
    spec = ape_quickstart(root / "pipelines")
    cache, runs = root / "cache", root / "runs"
    result = CliRunner().invoke(cli, ["--json", "--cache-dir", str(cache), "train", str(spec)],
                                env={"DLNFLOW_RUNS_DIR": str(runs)})
    assert result.exit_code == 0, result.output
    return TrainedRun(spec, cache, runs, json.loads(result.stdout))
