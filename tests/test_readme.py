"""The README is executable: CI runs its install, quickstart and test commands in order
(``scripts/readme_commands.py``), and its Python API example is a doctest run here."""

from __future__ import annotations

import doctest
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from paths import ROOT


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_follows_the_readme_install_quickstart_and_tests_in_order() -> None:
    script = _script()
    steps = script.commands((ROOT / "README.md").read_text(encoding="utf-8"),
                            ["Install", "Quickstart: train a prompt", "Run the tests"])
    assert steps[0].startswith("python3 -m venv .venv")
    assert "pip install -e '.[dev]'" in steps
    train = steps.index("dlnflow train pipelines/quickstart.yaml")
    assert train < steps.index("dlnflow status pipelines/quickstart.yaml") < steps.index("python -m pytest")
    assert steps[-1] == "python -m pytest"
    assert all("#" not in s for s in steps)
    assert "readme_commands.py" in (ROOT / ".ci" / "run").read_text()


def test_a_missing_section_is_an_error() -> None:
    with pytest.raises(SystemExit, match="no section"):
        _script().commands("## Install\n```bash\nls\n```\n", ["Quickstart"])


@pytest.mark.real
def test_the_python_api_example_runs(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^## Python API\n.*?^```python\n(.*?)^```", text, re.M | re.S)
    assert block is not None, "README.md has no python block in '## Python API'"
    monkeypatch.chdir(project)
    shutil.rmtree(project / "cache", ignore_errors=True)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.group(1), {}, "README.md#python-api", "README.md", 0)
    assert len(test.examples) >= 4
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0
