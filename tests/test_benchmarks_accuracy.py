"""The accuracy benchmark's plumbing: specs it builds, rows it writes, resuming, the report.

Runs on the stand-in model (one task, tiny sizes); one small test uses the real embedded model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from paths import ROOT
from standin import StandIn

from dlnflow.spec.compiler import compile_spec

sys.path.insert(0, str(ROOT / "benchmarks"))

import accuracy  # noqa: E402
import accuracy_protocol as ap  # noqa: E402
from dspy_baseline import normalise  # noqa: E402

TINY = ap.Protocol(
    name="tiny",
    split=(8, 4, 6),
    settings={
        "zero-shot": {},
        "few-shot": {"few_shot": 2},
        "ape": {"prompt_candidates": 2, "batch_size": 3},
        "dln1": {"iterations": 1, "batch_size": 3, "prompt_candidates": 2, "validate_every": 1},
        "dln2": {"iterations": 1, "batch_size": 2, "prompt_candidates": 2, "hidden_samples": 2,
                 "validate_every": 1},
    },
    hidden_max_tokens=4,
)


@pytest.fixture()
def tiny(monkeypatch: pytest.MonkeyPatch) -> ap.Protocol:
    monkeypatch.setitem(ap.PROTOCOLS, "tiny", TINY)
    return TINY


def bench(tmp_path: Path, shared_data: Path, *extra: str) -> dict:
    out = tmp_path / "acc.json"
    code = accuracy.main(["--protocol", "tiny", "--tasks", "navigate", "--data-dir", str(shared_data),
                          "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_spec_copy_has_protocol_split_settings_and_seed(tiny: ap.Protocol, shared_data: Path,
                                                        tmp_path: Path) -> None:
    path = ap.write_spec("subj", "dln2", tiny, 7, shared_data, tmp_path)
    doc = json.loads(path.read_text())
    assert doc["data"]["split"] == {"train": 8, "dev": 4, "test": 6, "seed": 42}
    assert doc["train"]["method"] == "vi" and doc["train"]["seed"] == 7
    assert doc["train"]["hidden_samples"] == 2
    assert doc["layers"][0]["generate"]["max_tokens"] == 4
    pipeline = compile_spec(path)  # the copy is a valid spec that reads the data folder given
    assert Path(pipeline.data.path) == (shared_data / "ordered_prompt" / "subj").resolve()
    assert len(pipeline.graph) == 2


def test_fingerprint_changes_with_settings_not_seed(tiny: ap.Protocol) -> None:
    assert tiny.fingerprint("navigate", "dln1") == tiny.fingerprint("navigate", "dln1")
    other = ap.Protocol("tiny", (8, 4, 7), tiny.settings)
    assert other.fingerprint("navigate", "dln1") != tiny.fingerprint("navigate", "dln1")
    assert tiny.fingerprint("navigate", "dln1") != tiny.fingerprint("navigate", "ape")


def test_rows_written_resumed_and_forced(standin: StandIn, tiny: ap.Protocol, shared_data: Path,
                                         tmp_path: Path) -> None:
    methods = "zero-shot,few-shot,dln1,dln2"
    doc = bench(tmp_path, shared_data, "--methods", methods, "--seeds", "1,2")
    rows = doc["rows"]
    assert sorted(rows) == sorted(f"navigate/{m}/{s}" for m in methods.split(",") for s in (1, 2))
    assert all(r["status"] == "ok" for r in rows.values())
    # identical splits for every method and seed; one-layer 0-shot equals test_before everywhere
    assert len({r["splits"]["test"] for r in rows.values()}) == 1
    assert rows["navigate/dln1/1"]["splits"]["sizes"] == [8, 4, 6]
    zero = rows["navigate/zero-shot/1"]["test"]
    one_layer = ("zero-shot", "few-shot", "dln1")
    befores = {rows[f"navigate/{m}/{s}"]["test_before"] for m in one_layer for s in (1, 2)}
    assert befores == {zero}
    # cost columns: requests = real calls + cache hits; the first run of the task did real work
    for r in rows.values():
        assert r["requests"] == r["backend_calls"] + r["cache_hits"]
        assert r["prompt_tokens_total"] >= r["prompt_tokens"]
    assert rows["navigate/zero-shot/1"]["backend_calls"] > 0
    assert rows["navigate/zero-shot/2"]["backend_calls"] == 0  # same prompts, all from the cache
    assert rows["navigate/zero-shot/2"]["requests"] == rows["navigate/zero-shot/1"]["requests"]
    # own cost does not depend on the cache: 0-shot asks for each dev and test example once
    assert rows["navigate/zero-shot/1"]["distinct_requests"] == 4 + 6
    assert rows["navigate/zero-shot/2"]["distinct_requests"] == 4 + 6
    own = {m: rows[f"navigate/{m}/1"]["distinct_prompt_tokens"] for m in ("zero-shot", "few-shot")}
    assert own["few-shot"] > own["zero-shot"]
    assert rows["navigate/dln1/1"]["distinct_requests"] > rows["navigate/zero-shot/1"]["distinct_requests"]
    # label counts: targets of the test split, and predictions summing to its size
    assert sum(rows["navigate/dln1/1"]["test_targets"].values()) == 6
    assert sum(rows["navigate/dln2/2"]["test_predictions"].values()) == 6
    md = (tmp_path / "acc.md").read_text()
    assert "| navigate |" in md and "64.1" in md and "far larger model" in md
    assert "none: every planned row finished" in md

    calls_before = sum(standin.calls.values())
    again = bench(tmp_path, shared_data, "--methods", methods, "--seeds", "1,2")
    assert sum(standin.calls.values()) == calls_before  # every row skipped
    assert again["rows"] == rows
    stripped = {k: v for k, v in rows["navigate/dln1/1"].items() if k != "test_predictions"}
    results = json.loads((tmp_path / "acc.json").read_text())
    results["rows"]["navigate/dln1/1"] = stripped
    (tmp_path / "acc.json").write_text(json.dumps(results))
    annotated = bench(tmp_path, shared_data, "--methods", "dln1", "--seeds", "1", "--annotate")
    again_row = annotated["rows"]["navigate/dln1/1"]
    assert again_row["test_predictions"] == rows["navigate/dln1/1"]["test_predictions"]
    assert again_row["annotate_backend_calls"] == 0  # a replay from the cache
    forced = bench(tmp_path, shared_data, "--methods", "dln1", "--seeds", "1", "--force")
    assert forced["rows"]["navigate/dln1/1"]["backend_calls"] == 0  # rerun, replayed from the cache
    assert forced["rows"]["navigate/dln1/1"]["test"] == rows["navigate/dln1/1"]["test"]


def test_failed_row_is_recorded_and_listed(standin: StandIn, tiny: ap.Protocol, shared_data: Path,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> dict:
        raise RuntimeError("model fell over")

    monkeypatch.setattr(accuracy, "run_dln_row", boom)
    out = tmp_path / "acc.json"
    code = accuracy.main(["--protocol", "tiny", "--tasks", "navigate", "--methods", "ape", "--seeds", "3",
                          "--data-dir", str(shared_data), "--out", str(out),
                          "--cache-dir", str(tmp_path / "c")])
    assert code == 1
    row = json.loads(out.read_text())["rows"]["navigate/ape/3"]
    assert row["status"] == "failed" and "model fell over" in row["error"]
    assert "`navigate/ape/3`: failed" in (tmp_path / "acc.md").read_text()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as err:
        accuracy.main(["--tasks", "navigat"])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        accuracy.main(["--data-dir", str(tmp_path / "nope")])
    assert err.value.code == 2


def test_a_missing_mipro_dependency_is_named_before_anything_runs(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    assert accuracy.missing_dspy_modules(["dln1", "copro"]) == []
    with pytest.raises(SystemExit) as err:
        accuracy.main(["--methods", "mipro", "--tasks", "mpqa"])
    assert err.value.code == 2
    assert "the DSPy rows need optuna: pip install -e '.[dspy]'" in capsys.readouterr().err


def test_normalise_answers() -> None:
    assert normalise(' "Yes." ') == "yes"
    assert normalise("**objective**") == "objective"
    assert normalise("(B)") == normalise("B.") == "b"  # a bare option letter counts as the option


@pytest.mark.real
def test_zero_and_few_shot_rows_on_the_real_model(shared_data: Path, tmp_path: Path, tiny: ap.Protocol,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ap.PROTOCOLS, "tiny", ap.Protocol("tiny", (6, 2, 4), tiny.settings))
    out = tmp_path / "acc.json"
    code = accuracy.main(["--protocol", "tiny", "--tasks", "mpqa", "--methods", "zero-shot,few-shot",
                          "--seeds", "1", "--data-dir", str(shared_data), "--cache-dir", str(tmp_path / "c"),
                          "--out", str(out), "--threads", "1"])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    zero, few = rows["mpqa/zero-shot/1"], rows["mpqa/few-shot/1"]
    assert zero["backend_calls"] > 0
    assert zero["test"] * 4 == int(zero["test"] * 4)  # a count of right answers over the 4 test examples
    assert few["test_before"] == zero["test"]
    assert few["prompts"]["answer.prompt"].count("Answer: ") == 2  # the examples went into the prompt
    assert few["prompt_tokens_total"] > zero["prompt_tokens_total"]


def dspy_row(status: str, seed: int) -> dict:
    before = {"n": 4, "parse_failures": 4, "off_label": 0, "errors": {}, "raw_failures": []}
    parse = {"test_before": before, "adapter_parse_failures": {"compile:JSONAdapter": 3},
             "adapter_parses": {"compile:JSONAdapter": 3}, "compile_attempts": 3,
             "compile_errors": ["AdapterParseError: no fields"] * 3}
    row = {"task": "mpqa", "method": "copro", "seed": seed, "status": status, "test": None,
           "test_before": 0.0, "backend_calls": 10, "cache_hits": 2, "requests": 12, "distinct_requests": 11,
           "distinct_prompt_tokens": 900, "distinct_completion_tokens": 400, "wall_seconds": 60.0,
           "parse": parse}
    if status == "timeout":
        row.update(phase="compile", error="stopped after the time cap of 9 s, during phase compile")
    return row


def test_report_shows_dspy_failures_instead_of_dropping_them() -> None:
    from accuracy_report import render

    doc = {"protocol": TINY.describe(), "updated": "now", "command": "c", "machine": "m", "model": "g",
           "seeds": [1, 2], "planned": ["mpqa/copro/1", "mpqa/copro/2"],
           "rows": {"mpqa/copro/1": dspy_row("compile_failed", 1), "mpqa/copro/2": dspy_row("timeout", 2)}}
    md = render(doc, list(doc["rows"].values()))
    assert "compile failed (seed 1)" in md  # the accuracy cell says what happened
    assert "| mpqa | DSPy COPRO | 1 | - | - | - | 0 / 4/4 / 0/4 | 3/3 | compile:JSONAdapter 3/3 |" in md
    assert "3/3 (timeout in phase compile)" in md
    assert "`mpqa/copro/2`: timeout: stopped after the time cap" in md
    assert "6x `AdapterParseError: no fields`" in md



def test_run_time_tells_calibrated_twins_from_rows_of_an_interrupted_invocation() -> None:
    from accuracy_report import run_time

    def row(task: str, method: str, calls: int) -> dict:
        return {"task": task, "method": method, "seed": 1, "status": "ok", "backend_calls": calls,
                "prompt_tokens": 10 * calls, "distinct_prompt_tokens": 10, "wall_seconds": 6.0, "cpu_seconds": 6.0}

    lines = run_time([row("mpqa", "zero-shot", 5), row("mpqa", "zero-shot-cal", 0), row("mpqa", "few-shot-cal", 0),
                      row("trec", "dln1", 0)])
    assert "- calibrated 0-shot and few-shot rows with no real calls: 2 (they reuse" in "\n".join(lines)
    assert lines[-2].endswith("say nothing): trec/dln1/1")
    assert not any("calibrated 0-shot" in line for line in run_time([row("mpqa", "dln1", 3)]))

@pytest.mark.real
@pytest.mark.server
def test_dspy_through_the_llama_server_caps_tokens_and_counts_parse_failures(
        gguf_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    dspy = pytest.importorskip("dspy")
    import dspy_baseline as db
    from dspy.clients.base_lm import GLOBAL_HISTORY

    proc = db.start_server(gguf_path, db.free_port(), tmp_path / "server.log", threads=1)
    port = proc.args[proc.args.index("--port") + 1]
    try:
        lm = dspy.LM(f"openai/{db.MODEL_ALIAS}", api_base=f"http://127.0.0.1:{port}/v1", api_key="local",
                     engine="litellm", temperature=0.0, max_tokens=8, cache=False)
        counter = db.parse_counter()
        counter.phase = "test"
        classes = ("negative", "positive")
        program = db.make_program(dspy, "Say whether the phrase is negative or positive.", classes)
        example = dspy.Example(text="a pure delight", answer="positive").with_inputs("text")
        with dspy.context(lm=lm, callbacks=[counter]):
            result = db.score(program, [example], classes, GLOBAL_HISTORY)
    finally:
        db.stop_server(proc)
    assert proc.poll() is not None  # stopped by its PID
    assert lm.history, "no call reached the server"
    # the litellm engine sends max_tokens, which the server honours (the default engine's does not)
    assert all(0 < int(h["usage"]["completion_tokens"]) <= 8 for h in lm.history)
    assert result["n"] == 1 and result["parse_failures"] in (0, 1)
    assert sum(counter.parses.values()) == len(lm.history)  # one parse per answer, failures counted
    assert result["parse_failures"] == (1 if counter.failures.get("test:JSONAdapter") else 0)
    assert db.history_cost(lm.history)["backend_calls"] == len(lm.history)
