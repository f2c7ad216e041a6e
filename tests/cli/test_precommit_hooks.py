""".pre-commit-hooks.yaml: which files each hook picks, and its entry command on good and stale files.

pre-commit runs ``entry`` with the matching staged file names appended; the tests pick files with
the hooks' own ``files``/``exclude`` patterns and run the entry through click's CliRunner.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from helpers import write_spec
from paths import ROOT
from standin import StandIn

from dlnflow.cli import cli

HOOKS = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
PATHS = ["pipelines/navigate.yaml", "pipelines/navigate.lock.yaml", "team/pipelines/x.json",
         ".github/workflows/ci.yml", "pipelines/sub/deep.yaml", "docs/pipelines.md"]


def picks(hook: dict[str, Any], paths: list[str]) -> list[str]:
    """The files pre-commit would pass to ``hook`` (``files`` and ``exclude`` are Python regexes)."""
    return [p for p in paths if re.search(hook["files"], p) and not re.search(hook.get("exclude", "^$"), p)]


def run_hook(hook_id: str, files: list[Path]) -> Result:
    argv = shlex.split(HOOKS[hook_id]["entry"])
    assert argv[0] == "dlnflow"  # the console script pyproject.toml installs
    return CliRunner().invoke(cli, argv[1:] + [str(f) for f in files])


def test_hooks_are_declared_for_pre_commit() -> None:
    assert set(HOOKS) == {"dlnflow-validate", "dlnflow-lock-status"}
    for hook in HOOKS.values():
        assert hook["language"] == "python" and hook["name"] and hook["files"]
    assert 'dlnflow = "dlnflow.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_file_patterns() -> None:
    assert picks(HOOKS["dlnflow-validate"], PATHS) == ["pipelines/navigate.yaml", "team/pipelines/x.json"]
    assert picks(HOOKS["dlnflow-lock-status"], PATHS) == ["pipelines/navigate.lock.yaml"]


def test_validate_hook(tmp_path: Path) -> None:
    good = write_spec(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("method: dln1", "method: nope"))
    assert run_hook("dlnflow-validate", [good]).exit_code == 0
    failed = run_hook("dlnflow-validate", [good, bad])
    assert failed.exit_code == 2 and "bad.yaml:" in failed.output


@pytest.mark.parametrize("edit, drift", [
    (None, None),
    (("Say blue or red.", "Say red or blue."), "initial prompt of layer 'answer' changed"),
    (("batch_size: 4", "batch_size: 3"), "hyperparameter batch_size: 4 -> 3"),
])
def test_lock_status_hook(standin: StandIn, tmp_path: Path, edit: tuple[str, str] | None,
                          drift: str | None) -> None:
    spec = write_spec(tmp_path)
    trained = CliRunner().invoke(cli, ["train", str(spec)])
    assert trained.exit_code == 0, trained.output
    lock = tmp_path / "tiny.lock.yaml"
    if edit is not None:
        text = spec.read_text()
        assert edit[0] in text
        spec.write_text(text.replace(edit[0], edit[1]))
    result = run_hook("dlnflow-lock-status", [lock])
    if drift is None:
        assert result.exit_code == 0, result.output
        assert "tiny.lock.yaml matches the spec" in result.stdout
    else:
        assert result.exit_code == 2
        assert drift in result.output and "Traceback" not in result.output


def test_lock_status_names_a_lock_without_its_spec(tmp_path: Path) -> None:
    orphan = tmp_path / "gone.lock.yaml"
    orphan.write_text("schema: 1\n")
    result = run_hook("dlnflow-lock-status", [orphan])
    assert result.exit_code == 2 and "no spec beside this lock file" in result.output
