"""Helpers for the export tests (``export/`` and ``cli/``): locked spec copies and loading a program."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from paths import ROOT

from dlnflow.lockfile import lock as lockmod
from dlnflow.spec.compiler import compile_spec

PIPELINES = ROOT / "pipelines"
# Prompts a lock can hold that the spec does not: multi-line, indented, with a tab and quotes, so
# that DSPy's whitespace tidying (inspect.cleandoc) would change them if the adapter used it.
LEARNED_DLN2 = {
    "think.prompt": "  Say in a few words what kind of thing this is.\n\tThen stop.",
    "answer.prompt": 'Animals are "blue" and fruits are \'red\'.\n  sparrow -> blue\n  mango -> red\nAnswer:',
}
LEARNED_QUICK = {"answer.prompt": "Answer with the colour that belongs to the word: blue or red."}


def locked_spec(tmp: Path, name: str, learned: dict[str, str], edit: tuple[str, str] | None = None) -> Path:
    """A copy of ``pipelines/<name>.yaml`` in ``tmp`` with a lock holding ``learned`` beside it."""
    spec = tmp / f"{name}.yaml"
    text = (PIPELINES / f"{name}.yaml").read_text(encoding="utf-8")
    if edit is not None:
        assert edit[0] in text
        text = text.replace(*edit)
    spec.write_text(text, encoding="utf-8")
    pipeline = compile_spec(spec)
    lockmod.write_lock(pipeline.lock_path, lockmod.build_lock(pipeline, {}, "0" * 64, "test", learned, {}, {}))
    return spec


def load_program(folder: Path) -> ModuleType:
    """Import ``folder/program.py`` under a name of its own (needs dspy)."""
    pytest.importorskip("dspy")
    name = "exported_" + "_".join(folder.parts[-3:]).replace("-", "_").replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, folder / "program.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def program_class(module: ModuleType) -> Any:
    import dspy

    [cls] = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, dspy.Module) and v.__module__ == module.__name__]
    return cls


def write_spec(tmp: Path, layers: str, models: str = "  local: {backend: llamacpp}\n", name: str = "custom") -> Path:
    spec = tmp / f"{name}.yaml"
    spec.write_text(f"version: 1\nname: {name}\nmodels:\n{models}data:\n  format: task\n"
                    "  task: {name: label_mapping, size: 20, seed: 0}\n  split: {train: 8, dev: 6, test: 6, seed: 1}\n"
                    f"layers:\n{textwrap.dedent(layers)}train:\n  method: none\n", encoding="utf-8")
    return spec


