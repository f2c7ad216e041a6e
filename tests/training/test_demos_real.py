"""A quickstart-like training that learns demonstrations on the real embedded model (one short iteration)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from paths import PIPELINES

from dlnflow.cli import cli
from dlnflow.graph.demos import example_id


@pytest.mark.real
def test_quickstart_with_demonstrations_locks_them_and_replays_with_zero_calls(tmp_path: Path) -> None:
    # mutation tried: a lock without the demos entry failed the first assertions; a swap drawing from
    # an unseeded generator made the warm rerun call the model
    spec = tmp_path / "quickstart.yaml"
    shutil.copy2(PIPELINES / "quickstart.yaml", spec)
    text = spec.read_text(encoding="utf-8")
    if "demos:" not in text:
        text = text.replace("    output: {classes: [blue, red]}\n",
                            "    output: {classes: [blue, red]}\n    demos: {k: 2}\n")
    cheaper = {"prompt_candidates": "2", "example_candidates": "1", "batch_size": "4", "iterations": "1"}
    text, n = re.subn(r"(?m)^  (prompt_candidates|example_candidates|batch_size|iterations): \d+$",
                      lambda m: f"  {m.group(1)}: {cheaper[m.group(1)]}", text)
    assert n == 4
    spec.write_text(text, encoding="utf-8")
    env = {"DLNFLOW_RUNS_DIR": str(tmp_path / "runs"), "DLNFLOW_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--json", "train", str(spec)]
    first = CliRunner().invoke(cli, args, env=env)
    assert first.exit_code == 0, first.output
    lock_path = tmp_path / "quickstart.lock.yaml"
    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8"))
    demos = lock["layers"]["answer"]["demos"]
    assert demos and all(d["id"] == example_id(d["input"], d["target"]) for d in demos)
    assert {d["target"] for d in demos} <= {"blue", "red"}
    assert json.loads(first.stdout)["backend_calls"] > 0
    before = lock_path.read_bytes()
    again = CliRunner().invoke(cli, args, env=env)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["backend_calls"] == 0
    assert lock_path.read_bytes() == before
    status = CliRunner().invoke(cli, ["--json", "status", str(spec)], env=env)
    assert json.loads(status.stdout)["clean"] is True, status.stdout
