"""``dlnflow graph``: text outline, Mermaid and DOT, with the residual input visible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlnflow.cli import cli

CHAIN = """\
version: 1
name: chain
data:
  format: task
  task: {name: label_mapping}
layers:
  - name: notes
    prompt: "Describe the word."
  - name: think
    inputs: [notes]
    template: "{{ prompt }}\\nNotes: {{ notes }}\\nThoughts:"
    prompt: "Reason about the notes."
  - name: answer
    inputs: [x, notes, think]
    prompt: "Pick the colour."
    output: {classes: [blue, "say \\"red\\""]}
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def chain(tmp_path: Path) -> str:
    path = tmp_path / "chain.yaml"
    path.write_text(CHAIN)
    return str(path)


def test_navigate_dln2_mermaid_shows_the_residual_input(
    project: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    code, out, _ = run("graph", "pipelines/navigate-dln2.yaml", "--format", "mermaid")
    assert code == 0
    assert out.splitlines() == [
        "flowchart LR",
        '  x(["x: input"])',
        '  think["think<br/>hidden_forward"]',
        '  answer[["answer<br/>classify_forward<br/>classes: Yes, No"]]',
        "  x --> think",
        "  x -. residual .-> answer",
        "  think --> answer",
    ]


def test_text_outline(chain: str) -> None:
    code, out, _ = run("graph", chain)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "chain  (3 layers, output: answer, method dln1)"
    assert "  notes  [hidden_forward]  model local" in lines
    assert "  think  [inline template]  model local" in lines
    assert "    inputs:  x (residual), notes (skip), think" in lines
    assert '    classes: blue | say "red"' in lines


def test_mermaid_edges_and_escaping(chain: str) -> None:
    code, out, _ = run("graph", chain, "--format", "mermaid")
    assert code == 0
    assert "  x --> notes" in out and "  notes --> think" in out and "  think --> answer" in out
    assert "  x -. residual .-> answer" in out and "  notes -. skip .-> answer" in out
    assert "classes: blue, say #quot;red#quot;" in out


def test_dot(chain: str) -> None:
    code, out, _ = run("graph", chain, "--format", "dot")
    assert code == 0
    assert out.startswith('digraph "chain" {\n  rankdir=LR;')
    label = 'answer\\nclassify_forward\\nclasses: blue, say \\"red\\"'
    assert f'  answer [label="{label}", peripheries=2];' in out
    assert '  x -> answer [style=dashed, label="residual"];' in out
    assert '  notes -> answer [style=dashed, label="skip"];' in out
    assert "  notes -> think;" in out
    assert out.rstrip().endswith("}")


def test_json(chain: str) -> None:
    code, out, _ = run("--json", "graph", chain)
    assert code == 0
    payload = json.loads(out)
    assert payload["output"] == "answer"
    assert [layer["name"] for layer in payload["layers"]] == ["notes", "think", "answer"]
    assert {"source": "x", "target": "answer", "kind": "residual"} in payload["edges"]
    assert len(payload["edges"]) == 5


def test_bad_spec_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CHAIN.replace("inputs: [notes]", "inputs: [nots]"))
    code, out, err = run("graph", str(path))
    assert code == 2 and out == ""
    assert f"{path}:10:14: layer 'think' reads 'nots', but no layer has that name" in err
    assert "did you mean 'notes'?" in err
    assert "Traceback" not in err


def test_help_explains_with_an_example() -> None:
    code, out, _ = run("graph", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "drawn dashed and labelled 'residual'" in text
    assert "dlnflow graph pipelines/navigate-dln2.yaml --format mermaid" in text
