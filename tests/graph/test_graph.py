"""The executable graph: parameters and state (strict), requests, and forward passes."""

from __future__ import annotations

import math
from typing import Any

import pytest
from standin import StandIn

from dlnflow.core.backend import Request
from dlnflow.core.errors import LockError
from dlnflow.graph.layers import Decoding, Graph, Layer
from dlnflow.graph.templates import Template
from dlnflow.runtime.client import Client


def the_input(prompt: str) -> str:
    return prompt.split("Input: ", 1)[1].split("\n", 1)[0]


def notes(request: Request) -> str:
    return f"  NOTE-{the_input(request.prompt)}\n"


def colour(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    """Blue for words whose notes the hidden layer wrote, by a wide margin."""
    blue = "Reasoning: NOTE-cat" in prompt or "Think: NOTE-cat" in prompt
    return [0.0, -3.0] if blue else [-2.0, 0.0]


def make_graph(trainable_hidden: bool = True) -> Graph:
    think = Layer("think", ("x",), Template.from_spec("hidden_forward"), "Take notes.", "m",
                  trainable=trainable_hidden, decoding=Decoding(max_tokens=12, stop=("\n",)))
    answer = Layer("answer", ("x", "think"), Template.from_spec("classify_forward"), "Pick a colour.", "m",
                   classes=("blue", "red"))
    return Graph([think, answer], name="demo")


def make_client() -> tuple[Client, StandIn]:
    backend = StandIn(gen=notes, cls=colour)
    return Client({"m": backend}), backend


# -- parameters and state ----------------------------------------------------------------------
def test_parameters_are_the_trainable_prompts() -> None:
    expected = [("think.prompt", "Take notes."), ("answer.prompt", "Pick a colour.")]
    assert list(make_graph().named_parameters()) == expected
    assert list(make_graph(trainable_hidden=False).named_parameters()) == [("answer.prompt", "Pick a colour.")]


def test_state_has_every_prompt_and_round_trips() -> None:
    g = make_graph(trainable_hidden=False)
    state = g.state()
    assert state == {"think.prompt": "Take notes.", "answer.prompt": "Pick a colour."}
    other = make_graph(trainable_hidden=False)
    assert other.load_state({**state, "answer.prompt": "Choose."}) == ([], [])
    assert other.layer("answer").prompt == "Choose."
    assert other.layer("answer").initial_prompt == "Pick a colour."


def test_load_state_strict_reports_missing_and_unexpected_and_changes_nothing() -> None:
    g = make_graph()
    with pytest.raises(LockError) as info:
        g.load_state({"answer.prompt": "New.", "answr.prompt": "Typo."})
    assert str(info.value) == ("learned prompts do not fit this graph "
                               "(missing: think.prompt; unexpected: answr.prompt)")
    assert g.state() == {"think.prompt": "Take notes.", "answer.prompt": "Pick a colour."}


def test_load_state_lenient_applies_what_fits() -> None:
    g = make_graph()
    missing, unexpected = g.load_state({"answer.prompt": "New.", "extra.prompt": "?"}, strict=False)
    assert (missing, unexpected) == (["think.prompt"], ["extra.prompt"])
    assert g.layer("answer").prompt == "New." and g.layer("think").prompt == "Take notes."


def test_graph_container_behaviour() -> None:
    g = make_graph()
    assert len(g) == 2 and [layer.name for layer in g] == ["think", "answer"]
    assert g.output.name == "answer" and g.output.is_classifier and not g.layer("think").is_classifier
    with pytest.raises(KeyError):
        g.layer("nope")


# -- requests ------------------------------------------------------------------------------------
def test_layer_requests_carry_decoding_and_verbalizers() -> None:
    g = make_graph()
    think, answer = g.layers
    context = think.render({"x": "cat"})
    assert context == "Take notes.\n\nInput: cat\nReasoning:"
    req = think.generate_request(context)
    assert (req.op, req.max_tokens, req.temperature, req.stop) == ("generate", 12, 0.0, ("\n",))
    assert think.generate_request(context, temperature=0.7, seed=3, sample=2).sample == 2
    assert answer.classify_request("c").targets == (" blue", " red")
    assert answer.score_request("c", " blue ").targets == (" blue",)
    other = answer.render({"x": "cat", "think": "n"}, prompt="Other.")
    assert other.startswith("Other.\n\nInput: cat\nThink: n")


# -- forward -------------------------------------------------------------------------------------
def test_forward_runs_layers_in_order_on_the_stand_in() -> None:
    client, backend = make_client()
    result = make_graph().forward(client, ["cat", "dog"])
    assert result.values == [
        {"x": "cat", "think": "NOTE-cat", "answer": "blue"},
        {"x": "dog", "think": "NOTE-dog", "answer": "red"},
    ]
    assert result.outputs() == ["blue", "red"] and result.output == "answer"
    expected_cat = [1 / (1 + math.exp(-3.0)), math.exp(-3.0) / (1 + math.exp(-3.0))]
    assert result.probs[0] == pytest.approx(expected_cat)
    assert sum(result.probs[1]) == pytest.approx(1.0)
    assert backend.calls == {"generate": 2, "classify": 2}
    answer_prompts = [r.prompt for r in backend.log if r.op == "classify"]
    assert answer_prompts[0] == "Pick a colour.\n\nInput: cat\nThink: NOTE-cat\nAnswer:"


def test_forward_uses_the_current_prompt_and_deduplicates_identical_calls() -> None:
    client, backend = make_client()
    g = make_graph()
    assert g.forward(client, ["cat", "cat"]).outputs() == ["blue", "blue"]
    assert backend.calls == {"generate": 1, "classify": 1}  # the repeated example costs nothing
    assert g(client, "cat") == "blue"
    assert backend.calls == {"generate": 2, "classify": 2}  # no cache in this client
    g.load_state({"think.prompt": "Other notes.", "answer.prompt": "Pick a colour."})
    g(client, "cat")
    assert backend.calls["generate"] == 3
    assert any(r.prompt.startswith("Other notes.") for r in backend.log)


def test_free_text_output_layer() -> None:
    client, _ = make_client()
    echo = Layer("answer", ("x",), Template.from_spec("forward"), "Echo.", "m")
    result = Graph([echo]).forward(client, ["owl"])
    assert result.outputs() == ["NOTE-owl"] and result.probs == [[]]


# -- the real embedded model -----------------------------------------------------------------------
@pytest.mark.real
def test_forward_on_the_embedded_model(llama: Any) -> None:
    think = Layer("think", ("x",), Template.from_spec("hidden_forward"), "Describe the word in a few words.",
                  "local", decoding=Decoding(max_tokens=4))
    answer = Layer("answer", ("x", "think"), Template.from_spec("classify_forward"), "", "local",
                   classes=("animal", "fruit"))
    client = Client({"local": llama})
    result = Graph([think, answer]).forward(client, ["dog", "apple"])
    hidden = [v["think"] for v in result.values]
    assert all(isinstance(h, str) and h for h in hidden), hidden
    assert result.outputs() == ["animal", "fruit"], (hidden, result.probs)
    for probs in result.probs:
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert abs(probs[0] - probs[1]) > 0.2  # uniform scores would mean the logits were never read
