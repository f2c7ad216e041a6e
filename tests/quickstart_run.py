"""A real quickstart training run shared by the report-in-a-browser and MLflow tests.

``pipelines/quickstart.yaml`` is copied into a temporary folder (with two prompt candidates per
step instead of five, to score fewer prompts) and trained once per session on the embedded model
with one iteration (so it validates once), logged to an MLflow SQLite store in that folder.
Runs, cache and store all live in the temporary folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from paths import PIPELINES

CHEAPER = {"prompt_candidates": 2, "example_candidates": 1}


@dataclass
class QuickstartRun:
    folder: Path
    spec: Path
    run_dir: Path
    env: dict[str, str]
    payload: dict[str, Any]

    @property
    def tracking_uri(self) -> str:
        return self.env["DLNFLOW_TRACKING_URI"]


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> QuickstartRun:
    from dlnflow.cli import cli

    folder = tmp_path_factory.mktemp("quickstart")
    spec = folder / "quickstart.yaml"
    text = (PIPELINES / "quickstart.yaml").read_text(encoding="utf-8")
    for setting, value in CHEAPER.items():  # fewer candidates to score: the same run, fewer model calls
        text, n = re.subn(rf"(?m)^(  {setting}:) \d+$", rf"\g<1> {value}", text)
        assert n == 1, setting
    spec.write_text(text, encoding="utf-8")
    env = {"DLNFLOW_RUNS_DIR": str(folder / "runs"), "DLNFLOW_CACHE_DIR": str(folder / "cache"),
           "DLNFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    result = CliRunner().invoke(cli, ["train", str(spec), "--iterations", "1", "--track", "mlflow", "--json"],
                                env=env)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    return QuickstartRun(folder, spec, Path(payload["run_dir"]), env, payload)
