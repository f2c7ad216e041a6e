"""Data loading: formats, splits, digests, and located errors for bad data files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from paths import BAD_INPUTS

from dlnflow.core.errors import DataError, InputError
from dlnflow.core.example import Example
from dlnflow.data.dataset import Dataset, balanced_order, load_dataset, split_pool
from dlnflow.data.readers import MAX_LINE_BYTES
from dlnflow.spec.settings import DataSettings, SplitSettings

BAD = BAD_INPUTS / "data"
ALL = SplitSettings(train=None, dev=0, test=0, seed=0)


def settings(fmt: str, path: Path | None, split: SplitSettings = ALL, **kw: Any) -> DataSettings:
    return DataSettings(format=fmt, path=path, split=split, **kw)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(n: int, labels: tuple[str, ...] = ("a", "b")) -> list[dict[str, str]]:
    return [{"input": f"item {i}", "target": labels[i % len(labels)]} for i in range(n)]


# -- bad data files: every one located, with the gist of the message -------------------------
# (file, format, extra settings, classes, expected (line, col), pointer, message gist, hint gist)
BAD_CASES: list[tuple[str, str, dict[str, Any], tuple[str, ...] | None, tuple[int, int], str, str, str]] = [
    ("empty.jsonl", "jsonl", {}, None, (0, 0), "", "data file is empty", "at least one example"),
    ("blank.json", "bbh", {}, None, (0, 0), "", "data file is empty", ""),
    ("latin1_line1.jsonl", "jsonl", {}, None, (1, 15), "", "byte 0xe9 at byte offset 14", "UTF-8"),
    ("bad_json_line.jsonl", "jsonl", {}, None, (3, 18), "", "invalid JSON line: Expecting ',' delimiter", ""),
    ("trailing_comma.json", "bbh", {}, None, (4, 1), "", "invalid JSON: Expecting value", "trailing comma"),
    ("wrong_field.jsonl", "jsonl", {}, None, (1, 1), "", 'no field "input" (fields found: inputs, target)',
     'did you mean "inputs"'),
    ("unknown_label.jsonl", "jsonl", {}, ("blue", "red"), (2, 30), "/target",
     'label "green" is not one of the output classes (blue, red)', "data.labels"),
    ("ragged.csv", "csv", {}, None, (3, 1), "", "row has 3 fields but the header has 2", "quote"),
    ("bad_quote.csv", "csv", {}, None, (3, 1), "", "malformed CSV", ""),
    ("csv_other_columns.csv", "csv", {}, None, (1, 1), "", 'no field "input" (fields found: text, label)',
     "data.input"),
    ("bbh_no_examples.json", "bbh", {}, None, (1, 1), "", 'an "examples" list (found: data)', ""),
    ("leopard_not_list.json", "leopard", {}, None, (1, 1), "", "expected a JSON list of examples, found dict", ""),
    ("leopard_case_label.json", "leopard", {}, ("Relevant", "Not Relevant"), (3, 38), "/1/label",
     'label "relevant" is not one of the output classes', 'case-sensitive: did you mean "Relevant"'),
    ("null_target.jsonl", "jsonl", {}, None, (2, 30), "/target", 'field "target" is null; expected text', ""),
    ("not_object.jsonl", "jsonl", {}, None, (2, 1), "", 'expected an object with fields "input" and "target"', ""),
    ("unmapped_label.jsonl", "jsonl", {"input": "sentence", "target": "label", "labels": {"0": "neg", "1": "pos"}},
     None, (2, 31), "/label", 'label "7" has no entry in data.labels (mapped: 0, 1)', ""),
    ("ordered_prompt_missing_test", "ordered_prompt", {}, None, (0, 0), "", "data file not found", "data.path"),
    ("no_such_file.jsonl", "jsonl", {}, None, (0, 0), "", "data file not found", "relative to the spec"),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_data_is_located(case: tuple[Any, ...]) -> None:
    name, fmt, extra, classes, (line, col), pointer, gist, hint = case
    with pytest.raises(DataError) as info:
        load_dataset(settings(fmt, BAD / name, **extra), classes)
    assert info.value.exit_code == 2
    problem = info.value.problems[0]
    assert Path(problem.file).name in (name, "test.jsonl")
    assert (problem.line, problem.col) == (line, col)
    assert problem.pointer == pointer
    assert gist in problem.message
    assert hint in (problem.hint or "")


def test_bad_inputs_folder_has_enough_cases() -> None:
    on_disk = {p.name for p in BAD.iterdir()}
    assert len(on_disk) >= 12
    assert on_disk <= {c[0] for c in BAD_CASES}  # every file there is exercised


def test_huge_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    path.write_text('{"input": "a", "target": "b"}\n{"input": "' + "x" * (MAX_LINE_BYTES + 10) + '"}\n')
    with pytest.raises(DataError) as info:
        load_dataset(settings("jsonl", path))
    problem = info.value.problems[0]
    assert (problem.line, problem.col) == (2, 1)
    assert "lines over 1 MB are refused" in problem.message


def test_every_bad_row_is_reported_and_repeats_are_counted(tmp_path: Path) -> None:
    data = rows(6, ("blue", "green", "pink"))
    with pytest.raises(DataError) as info:
        load_dataset(settings("jsonl", write_jsonl(tmp_path / "d.jsonl", data)), ("blue", "red"))
    messages = [p.message for p in info.value.problems]
    assert [p.line for p in info.value.problems] == [2, 3]
    assert 'label "green"' in messages[0] and "(and 1 more rows like this)" in messages[0]
    assert 'label "pink"' in messages[1]


def test_problem_list_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text("".join("{oops\n" for _ in range(30)))
    with pytest.raises(DataError) as info:
        load_dataset(settings("jsonl", path))
    assert len(info.value.problems) == 21
    assert info.value.problems[-1].message == "... and 10 more problems"


def test_path_is_required_for_file_formats() -> None:
    with pytest.raises(DataError, match="data.path is required"):
        load_dataset(settings("jsonl", None))


# -- formats -----------------------------------------------------------------------------------
def test_jsonl_with_custom_fields_and_labels(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "good", "y": 1}, {"q": "bad", "y": 0}])
    data = load_dataset(settings("jsonl", path, input="q", target="y", labels={"0": "neg", "1": "pos"}),
                        ("neg", "pos"))
    assert sorted(data.train, key=lambda e: e.input) == [Example("bad", "neg"), Example("good", "pos")]
    assert data.source == "jsonl:d.jsonl"
    assert data.digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_crlf_line_ends_and_byte_order_mark(tmp_path: Path) -> None:
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"input": "a", "target": "x"}\r\n{"input": "b", "target": "y"}\r\n')
    assert sorted(e.input for e in load_dataset(settings("jsonl", jsonl)).train) == ["a", "b"]
    table = tmp_path / "d.csv"
    table.write_bytes(b"\xef\xbb\xbfinput,target\r\na,x\r\nb,y\r\n")
    assert sorted(load_dataset(settings("csv", table)).train, key=lambda e: e.input) == [Example("a", "x"),
                                                                                            Example("b", "y")]


def test_csv_with_quoted_commas(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('input,target\n"red, ripe apple",red\nsparrow,blue\n', encoding="utf-8")
    data = load_dataset(settings("csv", path), ("blue", "red"))
    assert sorted(e.input for e in data.train) == ["red, ripe apple", "sparrow"]


def test_bbh_and_leopard_shapes(tmp_path: Path) -> None:
    bbh = tmp_path / "t.json"
    bbh.write_text(json.dumps({"canary": "x", "examples": rows(4, ("Yes", "No"))}))
    assert len(load_dataset(settings("bbh", bbh), ("Yes", "No")).train) == 4
    leo = tmp_path / "l.json"
    leo.write_text(json.dumps([{"sentence1": f"s{i}", "label": "Relevant"} for i in range(3)]))
    data = load_dataset(settings("leopard", leo), ("Relevant", "Not Relevant"))
    assert {e.input for e in data.train} == {"s0", "s1", "s2"}


def test_ordered_prompt_draws_each_split_from_its_file(tmp_path: Path) -> None:
    for name, n in (("train", 30), ("dev_subsample", 10), ("test", 20)):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"sentence": f"{name} {i}", "label": str(i % 2)} for i in range(n)])
    split = SplitSettings(train=5, dev=None, test=7, seed=3)
    data = load_dataset(settings("ordered_prompt", tmp_path, split, labels={"0": "neg", "1": "pos"}), ("neg", "pos"))
    assert (len(data.train), len(data.dev), len(data.test)) == (5, 10, 7)
    assert all(e.input.startswith("train ") for e in data.train)
    assert all(e.input.startswith("dev_subsample ") for e in data.dev)
    assert all(e.input.startswith("test ") for e in data.test)
    assert data.source == f"ordered_prompt:{tmp_path.name}"
    with pytest.raises(DataError, match=r"data.split.test asks for 50 examples but the file has only 20"):
        load_dataset(settings("ordered_prompt", tmp_path, SplitSettings(5, 5, 50, 0), labels={"0": "n", "1": "p"}))


# -- splits ------------------------------------------------------------------------------------
def test_split_sizes_seed_and_disjointness(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows(40))
    a = load_dataset(settings("jsonl", path, SplitSettings(train=10, dev=5, test=None, seed=7)))
    b = load_dataset(settings("jsonl", path, SplitSettings(train=10, dev=5, test=None, seed=7)))
    c = load_dataset(settings("jsonl", path, SplitSettings(train=10, dev=5, test=None, seed=8)))
    assert (len(a.train), len(a.dev), len(a.test)) == (10, 5, 25)
    assert a == b and a.train != c.train
    inputs = [e.input for e in a.train + a.dev + a.test]
    assert len(set(inputs)) == 40


def test_split_ignores_the_global_rng(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows(20))
    split = SplitSettings(train=5, dev=5, test=5, seed=1)
    np.random.seed(0)
    first = load_dataset(settings("jsonl", path, split))
    np.random.seed(12345)
    assert load_dataset(settings("jsonl", path, split)) == first


def test_changing_test_size_keeps_train(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows(30))
    small = load_dataset(settings("jsonl", path, SplitSettings(10, 5, 5, 0)))
    large = load_dataset(settings("jsonl", path, SplitSettings(10, 5, 15, 0)))
    assert small.train == large.train and small.dev == large.dev


def test_split_larger_than_pool_is_a_clear_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows(12))
    with pytest.raises(DataError) as info:
        load_dataset(settings("jsonl", path, SplitSettings(10, 5, 5, 0)))
    assert "data.split asks for 10 + 5 + 5 = 20 examples but the data has only 12" in str(info.value)
    assert "null" in (info.value.problems[0].hint or "")


def test_two_null_sizes_are_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows(12))
    with pytest.raises(InputError, match="at most one"):
        load_dataset(settings("jsonl", path, SplitSettings(None, None, 2, 0)))


def test_balanced_order_keeps_every_prefix_balanced() -> None:
    targets = ["a"] * 10 + ["b"] * 10
    order = balanced_order(targets, np.random.default_rng(5))
    assert sorted(order) == list(range(20))
    for k in range(1, 21):
        head = [targets[i] for i in order[:k]]
        assert abs(head.count("a") - head.count("b")) <= 1


def test_split_pool_balanced() -> None:
    pool = [Example(f"a{i}", "a") for i in range(8)] + [Example(f"b{i}", "b") for i in range(8)]
    train, dev, test = split_pool(pool, SplitSettings(6, 4, 6, 0), "x", balanced=True)
    for part in (train, dev, test):
        assert sum(e.target == "a" for e in part) == len(part) // 2


def test_digest_is_stable_and_tracks_bytes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows(6))
    first = load_dataset(settings("jsonl", path)).digest
    assert load_dataset(settings("jsonl", path)).digest == first
    path.write_text(path.read_text() + "\n")
    assert load_dataset(settings("jsonl", path)).digest != first


def test_dataset_split_accessor() -> None:
    data = Dataset([Example("a", "b")], [], [], "d", "s")
    assert data.split("train") == [Example("a", "b")]
    with pytest.raises(ValueError):
        data.split("validation")


# -- the shared public data sets -------------------------------------------------------------------
def test_shared_bbh_navigate(shared_data: Path) -> None:
    path = shared_data / "bbh" / "navigate.json"
    data = load_dataset(settings("bbh", path, SplitSettings(100, 50, 100, 42)), ("Yes", "No"))
    assert (len(data.train), len(data.dev), len(data.test)) == (100, 50, 100)
    assert {e.target for e in data.test} == {"Yes", "No"}
    assert data.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.source == "bbh:navigate.json"


def test_shared_trec_with_label_words(shared_data: Path) -> None:
    words = ("description", "entity", "expression", "human", "location", "number")
    labels = {str(i): w for i, w in enumerate(words)}
    data = load_dataset(settings("ordered_prompt", shared_data / "ordered_prompt" / "trec",
                                 SplitSettings(20, 10, 20, 42), labels=labels), words)
    assert (len(data.train), len(data.dev), len(data.test)) == (20, 10, 20)
    assert {e.target for e in data.train} <= set(words)


def test_shared_disaster(shared_data: Path) -> None:
    data = load_dataset(settings("leopard", shared_data / "leopard" / "disaster_eval.json",
                                 SplitSettings(1000, 250, 250, 42)), ("Relevant", "Not Relevant"))
    assert len(data.train) == 1000 and len({e.input for e in data.train + data.dev + data.test}) > 1400
