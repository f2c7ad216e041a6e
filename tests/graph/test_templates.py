"""Templates: rendering, the built-in library, the sandbox and strict undefined variables."""

from __future__ import annotations

import pytest

from dlnflow.core.errors import TemplateError
from dlnflow.graph.templates import (
    BACKWARD_LIBRARY,
    FORWARD_LIBRARY,
    FORWARD_VARIABLES,
    REWRITE_INSTRUCTIONS,
    Template,
    backward,
)


def test_forward_templates_render_inputs_in_order() -> None:
    t = Template.from_spec("classify_forward")
    pairs = [("x", "cat"), ("think", "a pet")]
    text = t.render(prompt="Pick a colour.", inputs=pairs, **dict(pairs))
    assert text == "Pick a colour.\n\nInput: cat\nThink: a pet\nAnswer:"
    hidden = Template.from_spec("hidden_forward").render(prompt="Take notes.", inputs=[("x", "2+2")])
    assert hidden == "Take notes.\n\nInput: 2+2\nReasoning:"


def test_layer_names_become_readable_labels() -> None:
    text = Template.from_spec("forward").render(prompt="P", inputs=[("step_notes", "n")])
    assert text == "P\n\nStep notes: n\nAnswer:"


def test_built_in_templates_only_need_prompt_and_inputs() -> None:
    for name in FORWARD_LIBRARY:
        t = Template.from_spec(name)
        assert t.name == name and t.variables == FORWARD_VARIABLES


def test_inline_template_and_its_variables() -> None:
    t = Template.from_spec("{{ prompt }}\nQ: {{ x }}\nNotes: {{ think }}\nA:")
    assert t.name is None
    assert t.variables == frozenset({"prompt", "x", "think"})
    assert t.render(prompt="Be brief.", x="why?", think="because") == "Be brief.\nQ: why?\nNotes: because\nA:"


def test_loop_variables_are_not_counted_as_inputs() -> None:
    t = Template.from_spec("{% for n, v in inputs %}{{ loop.index }} {{ n }}={{ v }};{% endfor %}")
    assert t.variables == frozenset({"inputs"})
    assert t.render(inputs=[("x", "1"), ("y", "2")]) == "1 x=1;2 y=2;"


def test_unknown_template_name_suggests_the_closest() -> None:
    with pytest.raises(TemplateError, match="did you mean 'classify_forward'"):
        Template.from_spec("clasify_forward")
    with pytest.raises(TemplateError, match="inline template text must contain"):
        Template.from_spec("nothing_like_it")


def test_syntax_error_names_the_template_line() -> None:
    with pytest.raises(TemplateError, match="template syntax error on template line 2"):
        Template.from_spec("{{ prompt }}\n{% if %}\n")
    with pytest.raises(TemplateError, match="No filter named 'no_such_filter'"):
        Template.from_spec("{{ x | no_such_filter }}")


def test_strict_undefined() -> None:
    t = Template.from_spec("{{ prompt }} {{ x }}")
    with pytest.raises(TemplateError, match="undefined variable: 'x' is undefined"):
        t.render(prompt="p")
    with pytest.raises(TemplateError, match="undefined"):
        Template.from_spec("{{ x.missing_field }}").render(x="text")


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ x.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ x | attr('__class__') }}",
])
def test_sandbox_refuses_python_internals(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        Template.from_spec(source).render(x="text")
    assert "sandbox forbids" in str(info.value) or "undefined" in str(info.value)


RUNTIME_FAILURES = ["{% for i in range(10**9) %}{% endfor %}", "{{ 1 / 0 }}", "{{ 1 + 'a' }}"]


@pytest.mark.parametrize("source", RUNTIME_FAILURES, ids=["huge-range", "division-by-zero", "type-error"])
def test_runtime_failures_become_template_errors(source: str) -> None:
    with pytest.raises(TemplateError, match="template failed to render"):
        Template.from_spec(source).render()


def test_digest_follows_the_source() -> None:
    a, b = Template.from_spec("forward"), Template.from_spec("forward")
    assert a.digest == b.digest and len(a.digest) == 64
    assert Template.from_spec("{{ prompt }} {{ x }}").digest != a.digest


def test_backward_templates_render() -> None:
    examples = [{"input": "cat", "output": "red", "target": "blue", "correct": False}]
    text = backward("rewrite").render(prompt="Pick.", examples=examples, instruction=REWRITE_INSTRUCTIONS[0])
    assert "Current instruction:\nPick." in text
    assert "Input: cat\nModel answer: red\nCorrect answer: blue (wrong)" in text
    assert text.endswith("New instruction:")
    post = backward("posterior").render(prompt="Take notes.", x="cat", h="meow", next_prompt="Pick.",
                                        y="blue")
    assert "The correct final answer is: blue" in post and post.endswith("Reasoning:")
    assert set(BACKWARD_LIBRARY) >= {"rewrite", "posterior", "hidden_rewrite"}
