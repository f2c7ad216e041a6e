"""The sweep matrix: parsing --seeds/--set, expanding seeds x grid, applying settings, run folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TWO_LAYERS, write_spec

from dlnflow.core.errors import InputError
from dlnflow.experiments.matrix import Matrix, matrix_for, parse_seeds, parse_set
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.overrides import apply_overrides, set_setting
from dlnflow.training.runs import fingerprint, finished_summary, run_dir_for

EXPERIMENTS = """
experiments:
  seeds: [5, 6]
  grid:
    train.prompt_candidates: [3, 4]
    layers.answer.prompt: ["Say blue or red.", "Colour?"]
"""


@pytest.fixture()
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    return write_spec(tmp_path)


def test_parse_set_and_seeds() -> None:
    assert parse_set("train.iterations=10") == ("train.iterations", [10])
    assert parse_set("train.rewrite_temperature=0.5,0.9") == ("train.rewrite_temperature", [0.5, 0.9])
    assert parse_set("train.patience=null") == ("train.patience", [None])
    assert parse_set('layers.a.prompt=["x, y", z]') == ("layers.a.prompt", ["x, y", "z"])
    assert parse_seeds("13,42,25") == (13, 42, 25)
    for bad in ("iterations", "=3", "a=[1"):
        with pytest.raises(InputError):
            parse_set(bad)
    with pytest.raises(InputError, match="not an integer"):
        parse_seeds("1,x")
    with pytest.raises(InputError, match="repeated"):
        parse_seeds("1,1")


def test_matrix_expands_points_then_seeds() -> None:
    m = Matrix(seeds=(1, 2, 3), grid={"train.iterations": [1, 2], "loss": ["exact_match", "contains"]},
               fixed={"train.batch_size": 2})
    runs = m.runs()
    assert len(runs) == 12
    assert [r.seed for r in runs[:4]] == [1, 2, 3, 1]
    assert runs[0].settings == {"train.iterations": 1, "loss": "exact_match"}
    assert runs[3].settings == {"train.iterations": 1, "loss": "contains"}
    assert runs[-1].overrides == {"train.batch_size": 2, "train.iterations": 2, "loss": "contains",
                                  "train.seed": 3}


def test_matrix_from_spec_and_command_line(spec: Path) -> None:
    spec.write_text(spec.read_text() + EXPERIMENTS)
    base = compile_spec(spec)
    matrix, sweep = matrix_for(base)
    assert sweep and matrix.seeds == (5, 6) and len(matrix.runs()) == 8
    # --seeds replaces the spec's seeds; a one-value --set fixes a setting; several make a dimension
    matrix, _ = matrix_for(base, (1,), [("train.iterations", [1]), ("train.prompt_candidates", [2, 3, 4])])
    assert matrix.fixed == {"train.iterations": 1}
    assert matrix.grid["train.prompt_candidates"] == [2, 3, 4] and len(matrix.runs()) == 6


def test_no_experiments_is_a_single_run(spec: Path) -> None:
    matrix, sweep = matrix_for(compile_spec(spec), None, [("train.seed", [9])])
    assert not sweep and matrix.seeds == (9,) and matrix.fixed == {}
    matrix, sweep = matrix_for(compile_spec(spec))
    assert not sweep and matrix.seeds == (3,)  # the spec's own seed


def test_bad_settings_are_input_errors(spec: Path) -> None:
    base = compile_spec(spec)
    with pytest.raises(InputError, match="no such setting.*did you mean 'train.iterations'"):
        matrix_for(base, None, [("train.iteration", [2, 3])])
    with pytest.raises(InputError, match="train.batch_size=0"):
        matrix_for(base, None, [("train.batch_size", [0, 2])])
    with pytest.raises(InputError, match="not with a grid over train.seed"):
        matrix_for(base, None, [("train.seed", [1, 2])])


def test_apply_overrides_rebuilds_any_setting(spec: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, layers=TWO_LAYERS, name="two.yaml")
    base = compile_spec(spec)
    p = apply_overrides(base, {"layers.think.generate.max_tokens": 3, "train.seed": 11, "loss": "contains",
                               "data.split.dev": 4})
    assert p.graph.layer("think").decoding.max_tokens == 3
    assert (p.train.seed, p.loss, p.data.split.dev) == (11, "contains", 4)
    assert base.graph.layer("think").decoding.max_tokens == 8 and base.train.seed == 3  # base untouched
    with pytest.raises(InputError, match="must be one of|is not one of"):
        apply_overrides(base, {"loss": "nonsense"})


def test_set_setting_on_implicit_models() -> None:
    data: dict = {"layers": []}
    set_setting(data, "models.local.n_ctx", 512)
    assert data["models"]["local"] == {"backend": "llamacpp", "n_ctx": 512}
    with pytest.raises(InputError, match="no layer"):
        set_setting(data, "layers.nope.prompt", "x")


def test_run_folders_and_fingerprints_separate_runs(spec: Path) -> None:
    base = compile_spec(spec)
    a = apply_overrides(base, {"train.seed": 1})
    b = apply_overrides(base, {"train.seed": 1, "layers.answer.prompt": "Colour?"})
    c = apply_overrides(base, {"train.seed": 1, "train.iterations": 5})
    dirs = {run_dir_for(a, {"train.seed": 1}), run_dir_for(b, {"layers.answer.prompt": "Colour?"}),
            run_dir_for(c, {"train.iterations": 5})}
    assert len(dirs) == 3
    assert all(d.name.startswith("seed1-") for d in dirs)
    assert len({fingerprint(x, "d") for x in (a, b, c)}) == 3
    assert fingerprint(a, "d") == fingerprint(apply_overrides(base, {"train.seed": 1}), "d")
    assert fingerprint(a, "d") != fingerprint(a, "other data")


def test_finished_summary_needs_the_same_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"config": {"fingerprint": "abc"}, "metrics": {}}')
    assert finished_summary(tmp_path, "abc") is not None
    assert finished_summary(tmp_path, "xyz") is None
    (tmp_path / "summary.json").write_text("{not json")
    assert finished_summary(tmp_path, "abc") is None
    assert finished_summary(tmp_path / "absent", "abc") is None
