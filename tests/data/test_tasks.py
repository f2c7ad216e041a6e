"""Generated tasks: word lists, determinism, balance, uniqueness, and loading through ``format: task``."""

from __future__ import annotations

from collections import Counter

import pytest

from dlnflow.core.errors import DataError
from dlnflow.data.dataset import load_dataset
from dlnflow.data.tasks import TASKS, generate, get_task, label_mapping, task_classes
from dlnflow.spec.settings import DataSettings, SplitSettings

COLOURS = {"blue", "red", "green", "yellow", "orange", "purple", "pink", "black", "white", "brown", "lime", "plum"}


def task_settings(size: int = 300, seed: int = 0, split: SplitSettings | None = None) -> DataSettings:
    return DataSettings(format="task", task={"name": "label_mapping", "size": size, "seed": seed},
                        split=split or SplitSettings(40, 20, 40, 42))


def test_registry_and_classes() -> None:
    assert set(TASKS) == {"label_mapping"}
    assert task_classes("label_mapping") == ("blue", "red")
    with pytest.raises(KeyError, match="did you mean 'label_mapping'"):
        get_task("label_maping")


def test_word_lists_are_clean() -> None:
    animals, fruits = set(label_mapping.ANIMALS), set(label_mapping.FRUITS)
    assert len(animals) == len(label_mapping.ANIMALS) >= 40
    assert len(fruits) == len(label_mapping.FRUITS) >= 40
    assert not animals & fruits
    for word in animals | fruits:
        assert word.isalpha() and word.islower()
        assert not any(colour in word for colour in COLOURS), word


def test_generate_is_deterministic_balanced_and_unique() -> None:
    a = generate("label_mapping", 101, seed=3)
    assert a == generate("label_mapping", 101, seed=3)
    assert a != generate("label_mapping", 101, seed=4)
    counts = Counter(e.target for e in a)
    assert counts == {"blue": 51, "red": 50}
    assert len({e.input for e in a}) == 101


def test_labels_follow_the_category() -> None:
    for e in generate("label_mapping", 200, seed=1):
        noun = e.input.split()[-1]
        assert (noun in label_mapping.ANIMALS) == (e.target == "blue")
        assert (noun in label_mapping.FRUITS) == (e.target == "red")


def test_small_sizes_use_bare_nouns_only() -> None:
    limit = 2 * min(len(label_mapping.ANIMALS), len(label_mapping.FRUITS))
    examples = generate("label_mapping", limit, seed=0)
    assert all(" " not in e.input for e in examples)
    phrases = [e for e in generate("label_mapping", limit + 2, seed=0) if " " in e.input]
    per_class = limit // 2 + 1
    expected = max(0, per_class - len(label_mapping.ANIMALS)) + max(0, per_class - len(label_mapping.FRUITS))
    assert len(phrases) == expected >= 1
    assert all(p.input.split()[0] in label_mapping.DETERMINERS for p in phrases)


def test_size_limits() -> None:
    biggest = label_mapping.max_size()
    assert len({e.input for e in generate("label_mapping", biggest, 0)}) == biggest
    for bad in (1, biggest + 1):
        with pytest.raises(ValueError, match="size must be between 2 and"):
            generate("label_mapping", bad, 0)


def test_task_dataset_splits_are_balanced_and_disjoint() -> None:
    data = load_dataset(task_settings(), ("blue", "red"))
    assert (len(data.train), len(data.dev), len(data.test)) == (40, 20, 40)
    for part in (data.train, data.dev, data.test):
        assert Counter(e.target for e in part) == {"blue": len(part) // 2, "red": len(part) // 2}
    inputs = [e.input for e in data.train + data.dev + data.test]
    assert len(set(inputs)) == len(inputs)
    assert data.source == "task:label_mapping(size=300, seed=0)"


def test_task_digest_is_stable_and_tracks_the_task() -> None:
    first = load_dataset(task_settings()).digest
    assert load_dataset(task_settings()).digest == first
    assert load_dataset(task_settings(seed=1)).digest != first
    assert load_dataset(task_settings(size=200)).digest != first
    # the split is not part of the data's identity
    assert load_dataset(task_settings(split=SplitSettings(10, 10, 10, 1))).digest == first


def test_task_errors_are_data_errors() -> None:
    with pytest.raises(DataError, match="unknown task 'colours'"):
        load_dataset(DataSettings(format="task", task={"name": "colours"}))
    with pytest.raises(DataError, match="size must be between"):
        load_dataset(task_settings(size=1))
    with pytest.raises(DataError) as info:
        load_dataset(task_settings(), ("Yes", "No"))
    assert "produces the labels blue, red" in str(info.value)
    assert "['blue', 'red']" in (info.value.problems[0].hint or "")


def test_task_labels_can_be_renamed() -> None:
    settings = DataSettings(format="task", task={"name": "label_mapping", "size": 20, "seed": 0},
                            labels={"blue": "animal", "red": "fruit"}, split=SplitSettings(10, 5, 5, 0))
    data = load_dataset(settings, ("animal", "fruit"))
    assert {e.target for e in data.train} == {"animal", "fruit"}


# -- the real embedded model -------------------------------------------------------------------
@pytest.mark.real
def test_real_model_needs_examples_to_learn_the_mapping(llama, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An instruction alone leaves the model near chance; examples in the prompt move it."""
    from dlnflow.graph.layers import Graph, Layer
    from dlnflow.graph.losses import accuracy
    from dlnflow.graph.templates import Template
    from dlnflow.runtime.cache import CallCache
    from dlnflow.runtime.client import Client

    data = load_dataset(task_settings(size=100, split=SplitSettings(6, 0, 12, 42)), ("blue", "red"))
    client = Client({"m": llama}, CallCache(tmp_path / "cache"))
    xs, ys = [e.input for e in data.test], [e.target for e in data.test]
    shots = "\n".join(f"Input: {e.input}\nAnswer: {e.target}" for e in data.train)
    scores = {}
    for name, prompt in (("instruction", "Classify the word as blue or red."),
                         ("examples", "Answer blue or red.\n\n" + shots)):
        layer = Layer("answer", ("x",), Template.from_spec("classify_forward"), prompt, "m", classes=("blue", "red"))
        result = Graph([layer]).forward(client, xs)
        assert any(abs(p[0] - 0.5) > 0.01 for p in result.probs)  # real scores, not a uniform fallback
        scores[name] = accuracy(result.outputs(), ys, "exact_match")
    assert scores["instruction"] <= 0.7
    assert scores["examples"] >= scores["instruction"] + 0.15
