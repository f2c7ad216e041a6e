"""Learned demonstrations in the DSPy export: written into the instruction, rendered exactly as dlnflow does."""

from __future__ import annotations

import json
import re
from pathlib import Path

from exporting import PIPELINES, load_program, locked_spec

from dlnflow.export.to_dspy import export_dspy, plan_export, render_files
from dlnflow.graph.demos import Demo, demos_text
from dlnflow.lockfile import lock as lockmod
from dlnflow.spec.compiler import compile_spec

DEMOS = (Demo.of("cat", "blue"), Demo.of("mango", "red"))
LEARNED = {"answer.prompt": "Animals or fruits?", "answer.demos": demos_text(DEMOS)}
_QUICK = (PIPELINES / "quickstart.yaml").read_text(encoding="utf-8")
_LOCKED_K = re.search(r"(?m)^    demos: \{k: \d+\}.*\n", _QUICK)
WITH_DEMOS = ((_LOCKED_K.group(0), "    demos: {k: 2}\n") if _LOCKED_K else
              ("    output: {classes: [blue, red]}\n", "    output: {classes: [blue, red]}\n    demos: {k: 2}\n"))
"""The quickstart with ``demos: {k: 2}`` on its output layer (whether or not it learns demonstrations already)."""


def test_demonstrations_are_part_of_the_exported_instruction(tmp_path: Path) -> None:
    # mutation tried: exporting layer.prompt instead of instruction_text() left the demonstrations out
    spec = locked_spec(tmp_path, "quickstart", LEARNED, edit=WITH_DEMOS)
    plan = plan_export(compile_spec(spec))
    instruction = "Animals or fruits?\n\nInput: cat\nAnswer: blue\n\nInput: mango\nAnswer: red"
    assert plan.output.instruction == instruction
    data = json.loads(render_files(plan)["program.json"])
    assert data["layers"][0]["instruction"] == instruction
    assert any("2 learned demonstrations are written into its instruction" in w for w in plan.warnings)


def test_the_exported_adapter_renders_demonstrations_as_dlnflow(tmp_path: Path) -> None:
    spec = locked_spec(tmp_path, "quickstart", LEARNED, edit=WITH_DEMOS)
    program = load_program(export_dspy(spec, tmp_path / "out").out)
    pipeline = compile_spec(spec)
    pipeline.graph.load_state(lockmod.learned_state(lockmod.read_lock(pipeline.lock_path) or {}))
    [message] = program.DlnflowAdapter().format(program.SIGNATURES["answer"], [], {"x": "sparrow"})
    assert message["content"] == pipeline.graph.output.render({"x": "sparrow"})
    assert message["content"].endswith("Input: mango\nAnswer: red\n\nInput: sparrow\nAnswer:")


def test_a_layer_without_locked_demonstrations_is_exported_without_them_and_says_so(tmp_path: Path) -> None:
    spec = locked_spec(tmp_path, "quickstart", {"answer.prompt": "P."}, edit=WITH_DEMOS)
    lock = lockmod.read_lock(spec.with_name("quickstart.lock.yaml"))
    assert lock is not None and lock["layers"]["answer"]["demos"] == []
    plan = plan_export(compile_spec(spec))
    assert plan.output.instruction == "P."
    assert any("learns demonstrations, but no lock holds them yet" in w for w in plan.warnings)
