"""The medium accuracy protocol: its row table, the paired bootstrap and label counts on hand-made
predictions, the per-task report and summary, rows waiting for a setting, and the dry run.

Everything runs on hand-made data or the stand-in model, on tiny sizes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from paths import ROOT
from standin import StandIn

sys.path.insert(0, str(ROOT / "benchmarks"))

import accuracy  # noqa: E402
import accuracy_protocol as ap  # noqa: E402
from accuracy_medium_report import render_medium  # noqa: E402
from accuracy_stats import correct_table, counts_text, label_counts, paired_bootstrap, top_share  # noqa: E402

TINY_MEDIUM = ap.Protocol(
    name="tiny-medium",
    split=(8, 4, 6),
    settings={"zero-shot": {}, "few-shot": {"few_shot": 2},
              "dln1": {"iterations": 1, "batch_size": 3, "prompt_candidates": 2, "validate_every": 1},
              "dln2": {"iterations": 1, "batch_size": 2, "prompt_candidates": 2, "hidden_samples": 2,
                       "validate_every": 1}},
    hidden_max_tokens=4,
    rows=("zero-shot", "few-shot", "dln1", "dln2"),
)


@pytest.fixture()
def tiny(monkeypatch: pytest.MonkeyPatch) -> ap.Protocol:
    monkeypatch.setitem(ap.PROTOCOLS, "tiny-medium", TINY_MEDIUM)
    return TINY_MEDIUM


# -- paired bootstrap ------------------------------------------------------------------------------
def test_bootstrap_on_two_examples_matches_the_hand_computed_distribution() -> None:
    # a is right on example 0 only, b on neither: a resample's difference is 0, 1/2 or 1 with
    # probabilities 1/4, 1/2, 1/4, so the 2.5th and 97.5th percentiles are 0 and 1
    got = paired_bootstrap(np.array([[1, 0]]), np.array([[0, 0]]))
    assert (got.diff, got.low, got.high, got.n) == (0.5, 0.0, 1.0, 2)
    assert not got.above_zero


def test_bootstrap_extremes_and_seed_means() -> None:
    assert paired_bootstrap(np.ones((1, 5)), np.zeros((1, 5))).text() == "+100.0 [+100.0, +100.0]"
    same = paired_bootstrap(np.array([[1, 0, 1]]), np.array([[1, 0, 1]]))
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)
    # three seeds of a against one baseline: the statistic is the mean over seeds and examples
    a = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    assert paired_bootstrap(a, np.zeros((1, 4))).diff == pytest.approx(6 / 12)


def test_bootstrap_interval_matches_the_normal_approximation_and_is_reproducible() -> None:
    # 400 examples; a is right wherever b is, and on 40 more: the per-example difference is a
    # 0/1 variable with mean 0.1, so the interval is about 0.1 +- 1.96 * sqrt(0.1 * 0.9 / 400)
    a = np.zeros((1, 400))
    b = np.zeros((1, 400))
    a[0, :240] = 1
    b[0, :200] = 1
    got = paired_bootstrap(a, b)
    half = 1.96 * (0.1 * 0.9 / 400) ** 0.5
    assert got.diff == pytest.approx(0.1)
    assert got.low == pytest.approx(0.1 - half, abs=0.006) and got.high == pytest.approx(0.1 + half, abs=0.006)
    assert got.above_zero
    assert paired_bootstrap(a, b) == got  # fixed seed: the same interval every time
    # unpaired (independent) resampling would give a far wider interval: ~ +-0.068
    assert got.high - got.low < 0.07


def test_bootstrap_refuses_outcomes_on_different_examples() -> None:
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(np.ones((1, 3)), np.ones((1, 4)))


def test_correct_table_and_label_counts() -> None:
    table = correct_table([["Yes", "No", "No"], ["No", "No", "No"]], ["Yes", "No", "Yes"])
    assert table.tolist() == [[1, 1, 0], [0, 1, 0]]
    preds = ["No", "Yes", "No", "Maybe", "No"]
    assert label_counts(preds) == [("No", 3), ("Maybe", 1), ("Yes", 1)]
    assert counts_text(preds) == "No 3, Maybe 1, Yes 1"
    assert top_share(preds) == pytest.approx(0.6)


# -- the row table ---------------------------------------------------------------------------------
def test_medium_rows_are_base_methods_plus_settings(shared_data: Path, tmp_path: Path) -> None:
    m = ap.METHODS
    assert ap.MEDIUM.rows == ("zero-shot", "zero-shot-cal", "few-shot", "few-shot-cal", "dln1", "dln1-cal",
                              "dln1-demos-cal", "dln2-cal")
    assert m["dln1-demos-cal"].train_method == "dln1" and m["dln1-demos-cal"].settings_of == "dln1"
    assert m["dln2-cal"].variant == "-dln2" and m["few-shot-cal"].train_method == "fewshot"
    doc = ap.spec_document("navigate", "dln1-demos-cal", ap.MEDIUM, 2, shared_data)
    out = doc["layers"][-1]
    assert out["output"]["calibration"] == "batch" and out["demos"] == {"k": 4}
    assert doc["train"] == {**ap.MEDIUM.settings["dln1"], "method": "dln1", "seed": 2}
    two = ap.spec_document("subj", "dln2-cal", ap.MEDIUM, 1, shared_data)
    assert "calibration" not in two["layers"][0].get("output", {})  # the hidden layer is left alone
    assert two["layers"][-1]["output"]["calibration"] == "batch"
    assert ap.spec_document("subj", "dln1", ap.MEDIUM, 1, shared_data)["layers"][-1]["output"].keys() == {"classes"}
    # the settings are part of a row's identity, the seed is not
    assert ap.MEDIUM.fingerprint("mpqa", "dln1") != ap.MEDIUM.fingerprint("mpqa", "dln1-cal")
    assert ap.MEDIUM.fingerprint("mpqa", "dln1-cal") != ap.MEDIUM.fingerprint("mpqa", "dln1-demos-cal")


def test_medium_splits_fit_the_data_and_the_plan_has_every_row(shared_data: Path, tmp_path: Path) -> None:
    from dlnflow.data.dataset import load_dataset
    from dlnflow.spec.compiler import compile_spec

    for task, sizes in (("date_understanding", [40, 60, 150]), ("trec", [100, 100, 200]),
                        ("disaster", [100, 100, 200])):
        pipeline = compile_spec(ap.write_spec(task, "zero-shot", ap.MEDIUM, 1, shared_data, tmp_path))
        data = load_dataset(pipeline.data, pipeline.graph.output.classes)
        assert [len(data.train), len(data.dev), len(data.test)] == sizes
    args = accuracy.parse_args(["--protocol", "medium", "--data-dir", str(shared_data)])
    assert args.seeds == [1, 2, 3] and args.out.name == "accuracy_medium.json"
    rows = accuracy.plan(args)
    assert len(rows) == 3 * (8 * 7 + 3)  # 7 one-layer rows on 8 tasks, DLN-2 on 3, three seeds
    assert {t for t, m, _ in rows if m == "dln2-cal"} == {"navigate", "subj", "disaster"}
    # within a task the calibrated twin follows the row whose calls it shares
    first = [m for t, m, s in rows if t == "mpqa" and s == 1]
    assert first.index("few-shot-cal") == first.index("few-shot") + 1
    small = accuracy.parse_args(["--data-dir", str(shared_data), "--dry"])  # --dry: no DSPy check
    assert "dln1-cal" not in small.methods and small.out.name == "accuracy.json"
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--methods", "dln1-cal", "--data-dir", str(shared_data)])  # not a small row
    # a plain base row may be named in medium (to compare with its calibrated twin), not one without settings
    assert accuracy.parse_args(["--protocol", "medium", "--methods", "dln2", "--data-dir", str(shared_data)]).methods \
        == ["dln2"]
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--protocol", "medium", "--methods", "ape", "--data-dir", str(shared_data)])


# -- the report ------------------------------------------------------------------------------------
GOLD = ["Yes"] * 10 + ["No"] * 10


def row(method: str, seed: int, predicted: list[str], dev: float) -> dict:
    return {"task": "navigate", "method": method, "seed": seed, "status": "ok", "test_predicted": predicted,
            "test_gold": GOLD, "dev": dev, "test": None, "test_before": 0.5, "splits": {"test": "t"},
            "backend_calls": 1, "requests": 1, "cache_hits": 0, "prompt_tokens": 1, "wall_seconds": 1.0,
            "cpu_seconds": 1.0}


def test_report_pairs_rows_with_0_shot_and_few_shot_and_counts_wins() -> None:
    rows = [row("zero-shot", s, ["No"] * 20, 0.5) for s in (1, 2, 3)]
    rows += [row("few-shot", s, ["Yes"] * 12 + ["No"] * 8, 0.6) for s in (1, 2, 3)]  # 18 of 20 right
    rows += [row("dln1-cal", s, list(GOLD), 0.9) for s in (1, 2, 3)]  # all right, best on dev
    rows += [row("dln1", s, ["Yes"] * 20, 0.95) for s in (1,)]  # best dev, but only 50% on test
    doc = {"protocol": ap.MEDIUM.describe(), "updated": "now", "command": "c", "machine": "m", "model": "g",
           "seeds": [1, 2, 3], "planned": [], "rows": {f"{r['method']}/{r['seed']}": r for r in rows}}
    md = render_medium(doc, rows)
    # per-task table: 0-shot answers one label. dln1-cal gains 1 on the 10 Yes examples and 0 on the
    # rest (mean +50, about +-1.96 * sqrt(.25 / 20) = +-22 points); against few-shot it gains on 2 examples
    assert "| 0-shot | 1,2,3 | **50.0** (50 / 50 / 50) | 50.0 | - | - | - | No 20 (every seed) |" in md
    assert ("| DLN-1 calibrated | 1,2,3 | **100.0** (100 / 100 / 100) | 90.0 | +50.0 [+30.0, +70.0] | "
            "+50 / +50 / +50 | +10.0 [+0.0, +25.0] | No 10, Yes 10 (every seed) |") in md
    # the best configuration is chosen on dev (dln1, 50% test), not on test (dln1-cal)
    assert ("| navigate | DLN-1 | 95.0 | 50.0 | +0.0 [-40.0, +40.0] | -40.0 [-60.0, -20.0] | "
            "DLN-1 calibrated 100.0 |") in md
    assert "on **0 of 1** tasks with results (none); goal 5 of 8: not decided: tasks missing" in md
    assert "Test labels (20 examples): No 10, Yes 10" in md
    assert "disagree with their test accuracy: none" in md  # these rows carry test None: not checked
    rows[0]["test"] = 0.9  # the 0-shot row says 90% but its predictions give 50%
    assert "disagree with their test accuracy: navigate/zero-shot/1" in render_medium(doc, rows)


def test_best_configuration_wins_are_counted_when_its_interval_is_above_zero() -> None:
    rows = [row("zero-shot", 1, ["No"] * 20, 0.5), row("few-shot", 1, list(GOLD), 0.5),
            row("zero-shot-cal", 1, list(GOLD), 0.9)]
    md = render_medium({"protocol": ap.MEDIUM.describe(), "updated": "now", "command": "c", "machine": "m",
                        "model": "g", "seeds": [1], "planned": [], "rows": {}}, rows)
    assert "plain 0-shot with the paired 95% CI above zero on **1 of 1** tasks with results (navigate)" in md
    # as good as few-shot on every example: a tie is not a win
    assert "plain few-shot with the paired 95% CI above zero on **0 of 1** tasks with results (none)" in md


# -- runs ------------------------------------------------------------------------------------------
def bench(tmp_path: Path, shared_data: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "acc.json"
    code = accuracy.main(["--protocol", "tiny-medium", "--tasks", "navigate", "--data-dir", str(shared_data),
                          "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *extra])
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_rows_keep_per_example_test_predictions(standin: StandIn, tiny: ap.Protocol, shared_data: Path,
                                                tmp_path: Path) -> None:
    code, doc = bench(tmp_path, shared_data, "--methods", "zero-shot,dln1,dln2", "--seeds", "1")
    assert code == 0
    for r in doc["rows"].values():
        assert len(r["test_predicted"]) == len(r["test_gold"]) == 6
        right = sum(p == g for p, g in zip(r["test_predicted"], r["test_gold"], strict=True))
        assert right / 6 == pytest.approx(r["test"], abs=1e-6)  # the kept predictions are the ones scored
    assert doc["rows"]["navigate/zero-shot/1"]["test_gold"] == doc["rows"]["navigate/dln2/1"]["test_gold"]


def test_a_row_whose_setting_dlnflow_lacks_waits_instead_of_failing(
        standin: StandIn, tiny: ap.Protocol, shared_data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    future = ap.Method("zero-shot-future", "0-shot future", "", "none", "zero-shot",
                       (("layers.{output}.output.no_such_setting", "x"),))
    monkeypatch.setitem(ap.METHODS, future.name, future)
    monkeypatch.setitem(ap.PROTOCOLS, "tiny-medium",
                        ap.Protocol(**{**TINY_MEDIUM.__dict__, "rows": ("zero-shot", future.name)}))
    code, doc = bench(tmp_path, shared_data, "--seeds", "1")
    assert code == 0  # waiting for a feature is not a failure
    waiting = doc["rows"]["navigate/zero-shot-future/1"]
    assert waiting["status"] == "unavailable" and "no_such_setting" in waiting["error"]
    assert doc["rows"]["navigate/zero-shot/1"]["status"] == "ok"
    assert "`navigate/zero-shot-future/1`: unavailable" in (tmp_path / "acc.md").read_text()


def test_dry_run_prints_calls_and_time_per_row_and_runs_nothing(
        standin: StandIn, tiny: ap.Protocol, shared_data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import accuracy_dry

    monkeypatch.setattr(accuracy_dry, "light_backend", lambda settings, base: standin)
    rates = tmp_path / "rates.json"
    made = {"task": "navigate", "status": "ok", "backend_calls": 100, "cpu_seconds": 50.0}
    rates.write_text(json.dumps({"rows": {
        "a": {**made, "method": "zero-shot"}, "b": {**made, "method": "few-shot", "cpu_seconds": 100.0},
        "c": {**made, "method": "dln1", "cpu_seconds": 30.0}}}))
    code, doc = bench(tmp_path, shared_data, "--methods", "zero-shot,few-shot,dln1", "--seeds", "1,2", "--dry",
                      "--rates", str(rates))
    assert code == 0 and doc == {} and sum(standin.calls.values()) == 0
    out = capsys.readouterr().out
    # 0-shot evaluates dev (4) and test (6) once; seed 2 replays it; few-shot's prompts are new
    assert "navigate | zero-shot | 1 | 10 (10-10) | 0 | 0.50 | 5 |" in out
    assert "navigate | few-shot | 1 | 10 (10-10) | 0 | 1.00 | 10 |" in out
    assert "navigate | few-shot | 2 | 10 (10-10) | 0 | 1.00 | 10 | as seed 1" in out  # other examples, as many
    assert "navigate | zero-shot | 2 | 0 (0-0) | 0 | 0.50 | 0 | replays seed 1" in out
    dln1 = [line for line in out.splitlines() if line.startswith("navigate | dln1 | 1 |")]
    assert dln1 and "| 0.30 |" in dln1[0]
    assert "total |" in out and "h of one core" in out


def test_split_override_needs_a_private_results_path(shared_data: Path, tmp_path: Path) -> None:
    for bad in (["--split", "20,10,20"], ["--split", "20,10", "--out", str(tmp_path / "a.json")],
                ["--split", "20,0,20", "--out", str(tmp_path / "a.json")]):
        with pytest.raises(SystemExit) as err:
            accuracy.parse_args(["--protocol", "medium", "--data-dir", str(shared_data), *bad])
        assert err.value.code == 2
    args = accuracy.parse_args(["--protocol", "medium", "--data-dir", str(shared_data), "--split", "20,10,20",
                                "--out", str(tmp_path / "a.json")])
    protocol = accuracy.protocol_of(args)
    assert protocol.split_for("navigate") == protocol.split_for("mpqa") == (20, 10, 20)
    assert protocol.fingerprint("mpqa", "dln1") != ap.MEDIUM.fingerprint("mpqa", "dln1")
