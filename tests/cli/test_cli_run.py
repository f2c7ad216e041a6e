"""``dlnflow run`` through CliRunner: inputs from options, files and stdin; traces; the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import TWO_LAYERS, write_spec
from standin import StandIn

from dlnflow.cli import cli


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin)


def test_run_prints_one_line_per_input(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    res = invoke("run", str(spec), "--input", "sparrow", "--input", "mango")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["sparrow", "mango"]
    assert all(line.split("\t")[1] in ("blue", "red") for line in lines)


def test_run_reads_a_file_and_stdin_and_skips_blank_lines(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    (tmp_path / "inputs.txt").write_text("sparrow\n\nmango\n", encoding="utf-8")
    from_file = json.loads(invoke("--json", "run", str(spec), "--file", str(tmp_path / "inputs.txt")).stdout)
    from_stdin = json.loads(invoke("--json", "run", str(spec), "--file", "-", stdin="sparrow\nmango\n").stdout)
    assert [r["input"] for r in from_file["outputs"]] == ["sparrow", "mango"]
    assert from_file["outputs"] == from_stdin["outputs"]


def test_run_trace_shows_hidden_layers(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, method="vi", layers=TWO_LAYERS)
    out = json.loads(invoke("--json", "run", str(spec), "--input", "kiwi", "--trace").stdout)
    (row,) = out["outputs"]
    assert set(row["trace"]) == {"think"} and isinstance(row["trace"]["think"], str)
    text = invoke("run", str(spec), "--input", "kiwi", "--trace").stdout.splitlines()
    assert text[0].startswith("  [think] ") and text[-1].startswith("kiwi\t")
    plain = json.loads(invoke("--json", "run", str(spec), "--input", "kiwi").stdout)
    assert "trace" not in plain["outputs"][0]


def test_run_uses_the_learned_prompts(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    assert invoke("train", str(spec)).exit_code == 0
    res = invoke("--json", "run", str(spec), "--input", "sparrow")
    out = json.loads(res.stdout)
    assert out["lock_note"] == "using learned prompts from tiny.lock.yaml"
    assert out["outputs"][0]["output"] in ("blue", "red")


@pytest.mark.real
def test_run_on_the_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    spec = write_spec(tmp_path)
    res = invoke("--json", "run", str(spec), "--input", "sparrow", "--input", "mango")
    assert res.exit_code == 0, res.output
    outputs = json.loads(res.stdout)["outputs"]
    assert [r["input"] for r in outputs] == ["sparrow", "mango"]
    assert all(r["output"] in ("blue", "red") for r in outputs)


@pytest.mark.real
def test_run_trace_on_the_real_model_shows_each_hidden_layer_as_the_model_wrote_it(project: Path) -> None:
    """A three-layer chain (think -> colour -> answer) on new inputs: the trace holds both hidden layers'
    texts, and each is what the model answers to that layer's input rendered from the layer before
    (checked against the answers the run stored, so no second guess of the model's numbers)."""
    from real_specs import chain3

    import dlnflow

    spec = chain3(project / "pipelines")
    inputs = ["kiwi", "sparrow"]
    res = invoke("--json", "run", str(spec), "--trace", *[a for x in inputs for a in ("--input", x)])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["outputs"]
    assert [r["input"] for r in rows] == inputs
    with dlnflow.load(spec) as net:  # the project copy's cache, which the run filled
        graph = net.pipeline.graph
        for row in rows:
            assert set(row["trace"]) == {"think", "colour"} and all(row["trace"].values()), row
            values = {"x": row["input"]}
            for name in ("think", "colour"):
                layer = graph.layer(name)
                [answer] = net.client.run(layer.model, [layer.generate_request(layer.render(values))])
                assert answer["text"].strip() == row["trace"][name], name
                values[name] = row["trace"][name]
            out = graph.output
            [probs] = net.client.run(out.model, [out.classify_request(out.render(values))])
            assert out.classes[max(range(2), key=probs["probs"].__getitem__)] == row["output"]
        assert net.client.usage.backend_calls == 0
    text = invoke("run", str(spec), "--trace", "--input", "kiwi")  # the same, as text: hidden layers first
    assert text.stdout.rstrip("\n") == "\n".join([f"  [think] {rows[0]['trace']['think']}",
                                                  f"  [colour] {rows[0]['trace']['colour']}",
                                                  f"kiwi\t{rows[0]['output']}"])
