"""Losses: normalisation, the three judges, accuracy."""

from __future__ import annotations

import pytest

from dlnflow.core.errors import ConfigError
from dlnflow.core.registry import LOSSES
from dlnflow.graph.losses import accuracy, contains, exact_match, exact_match_ci, get_loss, normalize


@pytest.mark.parametrize(("text", "expected"), [
    ("  Yes  ", "Yes"),
    ("Yes.", "Yes"),
    ('"blue"', "blue"),
    ("\u201cblue\u201d", "blue"),
    ("'(A)'.", "A"),
    ("(A)", "A"),
    ("A)", "A"),
    ("[B]", "B"),
    ("The (A)", "The (A)"),
    ("(A) and (B)", "(A) and (B)"),
    ("f(x)", "f(x)"),
    ("two\n\twords", "two words"),
    ("-12.", "-12"),
    ("3.5", "3.5"),
    ("!!!", "!!!"),
    ("", ""),
])
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_normalize_casefold() -> None:
    assert normalize(" Straße. ", casefold=True) == "strasse"


def test_exact_match_is_case_sensitive() -> None:
    assert exact_match(" No. ", "No")
    assert not exact_match("no", "No")
    assert not exact_match("Not", "No")


def test_exact_match_ci() -> None:
    assert exact_match_ci("NO", "no")
    assert exact_match_ci("(b)", "(B)")
    assert not exact_match_ci("(A)", "(B)")


@pytest.mark.parametrize(("pred", "target", "expected"), [
    ("Yes, you return to the start.", "Yes", True),
    ("yes", "Yes", True),
    ("Not sure", "No", False),
    ("I know", "No", False),
    ("So the answer is (B).", "(B)", True),
    ("a tough one (B)", "(A)", False),
    ("The answer is 12", "2", False),
    ("The answer is 12", "12", True),
    ("", "Yes", False),
    ("anything", "", False),
    ("it is New York City", "new york", True),
])
def test_contains(pred: str, target: str, expected: bool) -> None:
    assert contains(pred, target) is expected


def test_every_builtin_loss_resolves_to_its_function() -> None:
    assert {name: get_loss(name) for name in LOSSES.builtin_names()} == {
        "exact_match": exact_match, "exact_match_ci": exact_match_ci, "contains": contains}
    with pytest.raises(ConfigError, match="did you mean 'exact_match'"):
        get_loss("exact_mach")


def test_accuracy() -> None:
    assert accuracy(["Yes", "no", "(B)", "No"], ["Yes", "No", "(A)", "No"], "exact_match") == 0.5
    assert accuracy(["Yes", "no", "(B)", "No"], ["Yes", "No", "(A)", "No"], "exact_match_ci") == 0.75
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        accuracy(["a", "b"], ["a"], "exact_match")
    with pytest.raises(ValueError, match="zero examples"):
        accuracy([], [], "exact_match")


@pytest.mark.real
def test_losses_judge_real_generations(llama, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Free text from the embedded model, judged by all three losses."""
    from dlnflow.graph.layers import Decoding, Graph, Layer
    from dlnflow.graph.templates import Template
    from dlnflow.runtime.cache import CallCache
    from dlnflow.runtime.client import Client

    prompt = "Answer blue or red.\n\nInput: sparrow\nAnswer: blue\nInput: apple\nAnswer: red\n" \
             "Input: tiger\nAnswer: blue\nInput: mango\nAnswer: red"
    layer = Layer("answer", ("x",), Template.from_spec("forward"), prompt, "m",
                  decoding=Decoding(max_tokens=4, stop=("\n",)))
    xs, ys = ["wolf", "pear", "eagle", "lemon"], ["blue", "red", "blue", "red"]
    outputs = Graph([layer]).forward(Client({"m": llama}, CallCache(tmp_path / "cache")), xs).outputs()
    assert all(normalize(o) for o in outputs)
    exact, ci, loose = (accuracy(outputs, ys, name) for name in ("exact_match", "exact_match_ci", "contains"))
    assert exact <= ci <= loose
    assert loose >= 0.5, outputs
