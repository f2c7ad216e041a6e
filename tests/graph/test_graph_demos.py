"""Demonstrations held by a layer: ids, rendering in the layer's own format, state and strict load."""

from __future__ import annotations

import pytest

from dlnflow.core.errors import LockError
from dlnflow.graph.demos import Demo, demos_text, example_id, parse_demos
from dlnflow.graph.layers import Graph, Layer
from dlnflow.graph.templates import Template


def demo_layer(template: str = "classify_forward", k: int = 2, inputs: tuple[str, ...] = ("x",)) -> Layer:
    return Layer("answer", inputs, Template.from_spec(template), "Say blue or red.", "m",
                 classes=("blue", "red"), demo_k=k)


def test_example_ids_are_stable_and_tell_texts_apart() -> None:
    # mutation tried: hashing only the input made the third assertion fail
    assert example_id("cat", "blue") == example_id("cat", "blue") == Demo.of("cat", "blue").id
    assert len(example_id("cat", "blue")) == 16
    assert example_id("cat", "blue") != example_id("cat", "red")
    assert example_id("a b", "c") != example_id("a", "b c")


def test_demonstrations_render_in_the_layers_format_before_the_input() -> None:
    # mutation tried: dropping the demonstrations from Layer.render made this fail
    layer = demo_layer()
    layer.demos = (Demo.of("cat", "blue"), Demo.of("kiwi", "red"))
    assert layer.render({"x": "sparrow"}) == (
        "Say blue or red.\n\nInput: cat\nAnswer: blue\n\nInput: kiwi\nAnswer: red\n\nInput: sparrow\nAnswer:")
    # a candidate prompt replaces the instruction, the demonstrations stay
    assert layer.render({"x": "fig"}, "Other.").startswith("Other.\n\nInput: cat\nAnswer: blue\n\n")


def test_an_inline_template_renders_demonstrations_its_own_way() -> None:
    layer = demo_layer("{{ prompt }}\nQ: {{ x }} =>")
    layer.demos = (Demo.of("cat", "blue"),)
    assert layer.render({"x": "fig"}) == "Say blue or red.\nQ: cat => blue\nQ: fig =>"


def test_other_inputs_are_empty_in_demonstrations() -> None:
    layer = demo_layer("{{ prompt }}\nQ: {{ x }}\nNote: {{ think }}\nA:", inputs=("x", "think"))
    layer.demos = (Demo.of("cat", "blue"),)
    assert layer.render({"x": "fig", "think": "a fruit"}) == (
        "Say blue or red.\nQ: cat\nNote: \nA: blue\nQ: fig\nNote: a fruit\nA:")


def test_demonstrations_are_named_parameters_and_state() -> None:
    # mutation tried: leaving demos out of Graph.state made the state assertions fail
    layer = demo_layer()
    layer.demos = (Demo.of("cat", "blue"),)
    plain = Layer("other", ("x",), Template.from_spec("forward"), "P", "m")
    graph = Graph([plain, layer])
    assert dict(graph.named_parameters()) == {"other.prompt": "P", "answer.prompt": "Say blue or red.",
                                              "answer.demos": demos_text(layer.demos)}
    state = graph.state()
    assert parse_demos(state["answer.demos"]) == layer.demos
    assert "other.demos" not in state


def test_load_state_restores_demonstrations() -> None:
    graph = Graph([demo_layer()])
    wanted = (Demo.of("kiwi", "red"), Demo.of("cat", "blue"))
    graph.load_state({"answer.prompt": "New.", "answer.demos": demos_text(wanted)})
    assert graph.output.prompt == "New."
    assert graph.output.demos == wanted


def test_strict_load_reports_missing_and_unexpected_demonstrations() -> None:
    # mutation tried: state() without the demos entry made the first raise disappear
    graph = Graph([demo_layer()])
    with pytest.raises(LockError, match=r"missing: answer\.demos"):
        graph.load_state({"answer.prompt": "New."})
    assert graph.output.prompt == "Say blue or red."  # nothing changed
    plain = Graph([Layer("answer", ("x",), Template.from_spec("forward"), "P", "m")])
    with pytest.raises(LockError, match=r"unexpected: answer\.demos"):
        plain.load_state({"answer.prompt": "Q", "answer.demos": "[]"})
    missing, unexpected = graph.load_state({"answer.prompt": "Q"}, strict=False)
    assert (missing, unexpected) == (["answer.demos"], [])


def test_malformed_demonstrations_are_refused() -> None:
    graph = Graph([demo_layer()])
    with pytest.raises(LockError, match="id, input, target"):
        graph.load_state({"answer.prompt": "Q", "answer.demos": '[{"id": "1", "input": "a"}]'})
