"""The lock file: content, byte-identical output, atomic writes, corrupt locks, drift."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlnflow._version import __version__
from dlnflow.core.errors import LockError
from dlnflow.graph.layers import Graph, Layer
from dlnflow.graph.templates import Template
from dlnflow.lockfile import lock
from dlnflow.spec.pipeline import Pipeline
from dlnflow.spec.settings import DataSettings, SplitSettings, TrainSettings

IDS = {"local": {"backend": "llamacpp", "model": "gemma-3-270m", "gguf_sha256": "ab" * 32}}
DIGEST = "cd" * 32
LEARNED = {"think.prompt": "List the moves.\nThen add them up.", "answer.prompt": "Say Yes or No."}


def make_pipeline(tmp_path: Path, **changes: Any) -> Pipeline:
    think = Layer("think", ("x",), Template.from_spec("hidden_forward"), "Think step by step.", "local")
    answer = Layer("answer", ("x", "think"), Template.from_spec("classify_forward"), "Answer.", "local",
                   classes=("Yes", "No"))
    pipeline = Pipeline(
        name="nav", spec_path=tmp_path / "nav.yaml", graph=Graph([think, answer], "nav"),
        models={"local": {"backend": "llamacpp"}},
        data=DataSettings(format="bbh", path=tmp_path / "nav.json", split=SplitSettings(20, 10, 20, 42)),
        loss="exact_match", train=TrainSettings(method="vi", iterations=3),
    )
    return dataclasses.replace(pipeline, **changes)


def make_lock(pipeline: Pipeline, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"model_identities": IDS, "data_digest": DIGEST, "data_source": "bbh:nav.json",
                            "learned": LEARNED, "metrics": {"dev": 0.6, "test": 0.55},
                            "run": {"iterations": 3, "calls": 41}}
    args.update(kw)
    return lock.build_lock(pipeline, **args)


def test_lock_path_for() -> None:
    assert lock.lock_path_for(Path("pipelines/navigate.yaml")) == Path("pipelines/navigate.lock.yaml")
    assert lock.lock_path_for(Path("a/b.json")) == Path("a/b.lock.yaml")


def test_build_lock_contents(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    data = make_lock(p)
    assert data["schema"] == 1 and data["dlnflow"] == __version__ and data["spec"] == "nav.yaml"
    think = data["layers"]["think"]
    assert think["prompt"] == LEARNED["think.prompt"]
    assert think["initial_prompt_sha256"] == p.graph.layer("think").prompt_digest()
    assert think["template_sha256"] == p.graph.layer("think").template.digest
    assert think["model"] == "local" and "classes" not in think
    assert data["layers"]["answer"]["classes"] == ["Yes", "No"]
    assert data["models"] == IDS
    assert data["data"] == {"sha256": DIGEST, "source": "bbh:nav.json",
                            "split": {"train": 20, "dev": 10, "test": 20, "seed": 42}}
    assert data["train"]["iterations"] == 3 and data["train"]["method"] == "vi"
    assert data["seed"] == 42 and data["loss"] == "exact_match"
    assert data["metrics"] == {"dev": 0.6, "test": 0.55}
    assert data["run"] == {"iterations": 3, "calls": 41}


def test_secrets_never_reach_the_lock(tmp_path: Path) -> None:
    ids = {"local": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-secret",
                     "api_key_env": "OPENAI_API_KEY"}}
    text = lock.dump_lock(make_lock(make_pipeline(tmp_path), model_identities=ids))
    assert "sk-secret" not in text
    assert "OPENAI_API_KEY" in text  # the variable's name is not a secret


def test_unknown_learned_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ghost.prompt"):
        make_lock(make_pipeline(tmp_path), learned={"ghost.prompt": "x"})


def test_round_trip_and_learned_state(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    data = make_lock(p)
    path = lock.lock_path_for(p.spec_path)
    lock.write_lock(path, data)
    back = lock.read_lock(path)
    assert back == data
    state = lock.learned_state(back)
    assert state == LEARNED
    p.graph.load_state(state)
    assert p.graph.layer("think").prompt == LEARNED["think.prompt"]


@pytest.mark.parametrize("prompt", [
    "plain", "two\nlines", "trailing newline\n", "  leading spaces\nsecond", "trailing space \nnext",
    "tab\tinside\nx", "unicode: \u00e9t\u00e9 \u2192 \U0001f600\nok", "key: value # not a comment", "- dash", "",
    "'quoted'\n\"double\"", "\n\nstarts with blank lines", "yes", "null", "1.5",
])
def test_tricky_prompts_round_trip(tmp_path: Path, prompt: str) -> None:
    data = make_lock(make_pipeline(tmp_path), learned={"answer.prompt": prompt})
    path = tmp_path / "x.lock.yaml"
    lock.write_lock(path, data)
    assert lock.read_lock(path)["layers"]["answer"]["prompt"] == prompt  # type: ignore[index]


def test_multiline_prompts_are_literal_blocks(tmp_path: Path) -> None:
    text = lock.dump_lock(make_lock(make_pipeline(tmp_path)))
    assert "    prompt: |-\n      List the moves.\n      Then add them up.\n" in text
    assert text.startswith("# dlnflow lock file")
    assert "{" not in text.split("metrics", 1)[0].split("\n", 1)[1]  # block style, no flow mappings


def test_equal_inputs_give_byte_identical_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.lock.yaml", tmp_path / "b.lock.yaml"
    lock.write_lock(a, make_lock(make_pipeline(tmp_path)))
    shuffled = dict(reversed(list(LEARNED.items())))
    lock.write_lock(b, make_lock(make_pipeline(tmp_path), learned=shuffled))
    assert a.read_bytes() == b.read_bytes()
    keys = [line.split(":")[0] for line in a.read_text().splitlines() if line and line[0].isalpha()]
    assert keys == sorted(keys)


def test_a_failed_write_leaves_the_old_lock_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nav.lock.yaml"
    lock.write_lock(path, make_lock(make_pipeline(tmp_path)))
    before = path.read_bytes()

    def half_then_crash(handle: Any, data: bytes) -> None:
        handle.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(lock, "_write_all", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        lock.write_lock(path, make_lock(make_pipeline(tmp_path), learned={"answer.prompt": "new"}))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["nav.lock.yaml"]  # no temporary file left behind


def test_write_keeps_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "nav.lock.yaml"
    lock.write_lock(path, {"schema": 1})
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)
    lock.write_lock(path, {"schema": 1, "x": 1})
    assert path.stat().st_mode & 0o777 == 0o600


def test_absent_lock_reads_as_none(tmp_path: Path) -> None:
    assert lock.read_lock(tmp_path / "none.lock.yaml") is None


@pytest.mark.parametrize(("text", "where", "gist"), [
    ("schema: 1\nlayers: {a: {prompt: x}\n", (3, 1), "not valid YAML"),
    ("schema: 1\nlayers:\n  a:\n    prompt: [1, 2]\nmodels: {}\ndata: {}\ntrain: {}\n", (4, 13),
     "expected a prompt string, found list"),
    ("schema: 2\nlayers: {}\n", (1, 9), "lock schema 2 is not supported"),
    ("schema: 1\nlayers: {}\nmodels: {}\ndata: {}\n", (1, 1), 'expected a "train" mapping, found nothing'),
    ("- just\n- a list\n", (1, 1), "expected a mapping, found list"),
    ("   \n", (1, 1), "lock file is empty"),
])
def test_corrupt_lock_is_a_located_error(tmp_path: Path, text: str, where: tuple[int, int], gist: str) -> None:
    path = tmp_path / "bad.lock.yaml"
    path.write_text(text)
    with pytest.raises(LockError) as info:
        lock.read_lock(path)
    assert info.value.exit_code == 2
    problem = info.value.problems[0]  # type: ignore[attr-defined]
    assert (problem.line, problem.col) == where
    assert gist in problem.message
    assert f"{path}:{where[0]}:{where[1]}:" in str(info.value)


def test_lock_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.lock.yaml"
    path.write_bytes(b"schema: 1\nx: \xff\n")
    with pytest.raises(LockError, match="not UTF-8"):
        lock.read_lock(path)


# -- drift -------------------------------------------------------------------------------------
def test_no_drift_when_nothing_changed(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    assert lock.drift(p, make_lock(p), IDS, DIGEST) == []


def test_drift_names_each_kind_of_change(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    written = yaml.safe_load(lock.dump_lock(make_lock(p)))
    p.graph.layer("think").template = Template.from_spec("Steps for {{ x }}:")
    p.graph.layer("think").initial_prompt = "Think harder."
    changed = dataclasses.replace(
        p, train=dataclasses.replace(p.train, iterations=5, seed=7), loss="exact_match_ci",
        data=dataclasses.replace(p.data, split=SplitSettings(30, 10, 20, 42)),
    )
    ids = {"local": dict(IDS["local"], gguf_sha256="ef" * 32)}
    lines = lock.drift(changed, written, ids, "00" * 32)
    assert "template of layer 'think' changed" in lines
    assert "initial prompt of layer 'think' changed" in lines
    assert "model 'local' identity changed: gguf_sha256: 'abababababab...' -> 'efefefefefef...'" in lines
    assert "data changed: sha256 'cdcdcdcdcdcd...' -> '000000000000...'" in lines
    assert "data split train: 20 -> 30" in lines
    assert "loss: 'exact_match' -> 'exact_match_ci'" in lines
    assert "hyperparameter iterations: 3 -> 5" in lines
    assert "hyperparameter seed: 42 -> 7" in lines
    assert len(lines) == 8


def test_drift_layers_added_removed_and_rewired(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    written = make_lock(p)
    extra = Layer("check", ("x", "answer"), Template.from_spec("forward"), "", "api")
    answer = p.graph.layer("answer")
    answer.model = "api"
    answer.classes = ("Yes", "No", "Maybe")
    changed = dataclasses.replace(p, graph=Graph([answer, extra], "nav"))
    lines = lock.drift(changed, written, IDS, DIGEST)
    assert lines == [
        "layer 'think' was removed since the lock was written",
        "layer 'check' was added since the lock was written",
        "model of layer 'answer': 'local' -> 'api'",
        "output classes of layer 'answer': ['Yes', 'No'] -> ['Yes', 'No', 'Maybe']",
    ]
    assert lock.drift(changed, written, {"api": {"backend": "openai"}}, DIGEST)[-1] == "model 'api' is not in the lock"


def test_drift_skips_models_whose_identity_was_not_given(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    assert lock.drift(p, make_lock(p), {}, DIGEST) == []


def test_drift_of_labels_mapping(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    written = make_lock(p)
    relabelled = dataclasses.replace(p, data=dataclasses.replace(p.data, labels={"0": "No", "1": "Yes"}))
    assert lock.drift(relabelled, written, IDS, DIGEST) == ["data labels mapping changed"]


@pytest.mark.real
def test_lock_with_the_real_model_identity(llama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The embedded model's identity goes into the lock, reads back, and drifts when it changes."""
    identity = llama.identity()
    p = make_pipeline(tmp_path)
    path = lock.lock_path_for(p.spec_path)
    lock.write_lock(path, make_lock(p, model_identities={"local": identity}))
    back = lock.read_lock(path)
    assert back is not None and back["models"]["local"] == identity
    assert lock.drift(p, back, {"local": llama.identity()}, DIGEST) == []
    other = dict(identity, sha256="0" * 64)
    lines = lock.drift(p, back, {"local": other}, DIGEST)
    assert len(lines) == 1 and lines[0].startswith("model 'local' identity changed: sha256:")
