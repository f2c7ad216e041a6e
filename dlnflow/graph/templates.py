"""Templates: how a layer turns its prompt and inputs into model text.

Templates are Jinja2, rendered in a :class:`~jinja2.sandbox.SandboxedEnvironment` with
:class:`~jinja2.StrictUndefined`, so a template can neither reach Python internals nor
silently drop a missing variable.

A *forward* template (one per layer) receives:

- ``prompt``: the layer's learnable instruction;
- ``x``: the dataset input, and one variable per input layer, named after it;
- ``inputs``: the layer's inputs in order, as ``(name, text)`` pairs.

The built-in library below is addressed by name from a spec (``template: classify_forward``);
anything else containing ``{{`` is used as inline template text. The *backward* templates
(``rewrite``, ``posterior``, ``hidden_rewrite``) are what the optimizers use to ask the
backward model for new prompts and for hidden texts.

>>> t = Template.from_spec("forward")
>>> print(t.render(prompt="Reverse the word.", x="cat", inputs=[("x", "cat")]))
Reverse the word.
<BLANKLINE>
Input: cat
Answer:
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from dlnflow._util.suggest import closest
from dlnflow.core.errors import TemplateError

_INPUTS_BLOCK = (
    "{% for name, text in inputs %}"
    "{% if name == 'x' %}Input{% else %}{{ name | replace('_', ' ') | capitalize }}{% endif %}: {{ text }}\n"
    "{% endfor %}"
)

FORWARD_LIBRARY: dict[str, str] = {
    # Free-text answer after the instruction and the inputs.
    "forward": "{{ prompt }}\n\n" + _INPUTS_BLOCK + "Answer:",
    # A hidden layer: writes intermediate text (steps, notes) for the next layer.
    "hidden_forward": "{{ prompt }}\n\n" + _INPUTS_BLOCK + "Reasoning:",
    # A classification layer: the answer is one of the output classes (scored, not sampled).
    "classify_forward": "{{ prompt }}\n\n" + _INPUTS_BLOCK + "Answer:",
}

BACKWARD_LIBRARY: dict[str, str] = {
    # Ask for a better instruction, shown worked examples and one style of change.
    "rewrite": (
        "You improve instructions for a language model.\n\n"
        "Current instruction:\n{{ prompt }}\n\n"
        "Here is how the model did with it:\n"
        "{% for ex in examples %}"
        "Input: {{ ex.input }}\nModel answer: {{ ex.output }}\nCorrect answer: {{ ex.target }}"
        " ({{ 'right' if ex.correct else 'wrong' }})\n\n"
        "{% endfor %}"
        "{{ instruction }}\n"
        "Write only the new instruction.\n\nNew instruction:"
    ),
    # Ask for a better hidden text for one example, knowing the answer it should lead to.
    "posterior": (
        "{{ prompt }}\n\n"
        "Input: {{ x }}\n"
        "A first attempt at the reasoning was:\n{{ h }}\n\n"
        "The final step will be told: {{ next_prompt }}\n"
        "The correct final answer is: {{ y }}\n\n"
        "Write reasoning for this input that leads to the correct final answer.\n"
        "Reasoning:"
    ),
    # Ask for a better hidden-layer instruction from inputs and improved hidden texts.
    "hidden_rewrite": (
        "You improve instructions for a language model that writes intermediate reasoning.\n\n"
        "Current instruction:\n{{ prompt }}\n\n"
        "{% for ex in examples %}"
        "Input: {{ ex.input }}\nReasoning it wrote: {{ ex.output }}\nBetter reasoning: {{ ex.better }}\n\n"
        "{% endfor %}"
        "{{ instruction }}\n"
        "Write only the new instruction.\n\nNew instruction:"
    ),
    # APE-style: infer an instruction from input/output pairs alone.
    "induce": (
        "Here are inputs and the answers a task expects:\n\n"
        "{% for ex in examples %}Input: {{ ex.input }}\nAnswer: {{ ex.target }}\n\n{% endfor %}"
        "Write the instruction that tells someone how to answer this task.\n\nInstruction:"
    ),
}

REWRITE_INSTRUCTIONS: tuple[str, ...] = (
    "Rewrite the instruction so the wrong answers above would become right. Keep it short.",
    "Rewrite the instruction and add one short worked example taken from the inputs above.",
    "State, in one or two sentences, the rule that maps each input to its correct answer.",
    "Make the instruction clearer and more specific about what the answer must be.",
    "Rephrase the instruction in different words, keeping what works.",
)

FORWARD_VARIABLES = frozenset({"prompt", "inputs"})

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

MAX_VALUE_CHARS = 1_000_000
"""The longest string or list an operator inside a template may build."""
MAX_EXPONENT_BITS = 4096
"""The largest number ``**`` may produce, in bits."""


class BoundedSandbox(SandboxedEnvironment):
    """The sandbox, with ``*``, ``+`` and ``**`` bounded so that a template cannot exhaust memory
    with one expression such as ``{{ "a" * 10**12 }}``.

    >>> env = BoundedSandbox()
    >>> env.from_string("{{ '-' * 3 }}{{ 2 ** 10 }}").render()
    '---1024'
    >>> env.from_string("{{ 'a' * 10 ** 9 }}").render()
    Traceback (most recent call last):
    ...
    jinja2.exceptions.SecurityError: '*' would build a value of 1000000000 items (limit 1000000)
    """

    intercepted_binops = frozenset({"*", "+", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_size(operator, _repeat_size(left, right))
        elif isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _check_size(operator, len(left) + len(right))
        return super().call_binop(context, operator, left, right)


def _repeat_size(left: Any, right: Any) -> int:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(n, int):
            return len(seq) * max(n, 0)
    return 0


def _check_size(operator: str, size: int) -> None:
    if size > MAX_VALUE_CHARS:
        raise jinja2.exceptions.SecurityError(
            f"{operator!r} would build a value of {size} items (limit {MAX_VALUE_CHARS})")


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1):
        return
    bits = abs(base).bit_length() * exponent
    if bits > MAX_EXPONENT_BITS:
        raise jinja2.exceptions.SecurityError(f"'**' would build a number of about {bits} bits "
                                              f"(limit {MAX_EXPONENT_BITS})")


_env = BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


@dataclass(frozen=True)
class Template:
    """A parsed template: its name (or ``None`` when inline), source and variables.

    >>> Template.from_spec("Say {{ x }}").variables
    frozenset({'x'})
    """

    source: str
    name: str | None = None
    variables: frozenset[str] = field(default=frozenset())
    _compiled: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, source: str, name: str | None = None) -> Template:
        try:
            ast = _env.parse(source)
            compiled = _env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error on template line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateError as exc:  # unknown filters and tests surface here
            raise TemplateError(f"template error: {exc}") from None
        return cls(source, name, frozenset(meta.find_undeclared_variables(ast)), compiled)

    @classmethod
    def from_spec(cls, value: str) -> Template:
        """A built-in name or inline template text (anything that is not a bare identifier)."""
        if value in FORWARD_LIBRARY:
            return cls.parse(FORWARD_LIBRARY[value], value)
        if _IDENT.match(value):
            raise TemplateError(unknown_template_message(value))
        return cls.parse(value)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def render(self, **variables: Any) -> str:
        try:
            return str(self._compiled.render(**variables))
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template uses an undefined variable: {exc.message}") from None
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"template tried something the sandbox forbids: {exc}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template failed to render: {exc}") from None
        except (ArithmeticError, TypeError, ValueError) as exc:  # e.g. range() over the sandbox limit, 1/0
            raise TemplateError(f"template failed to render: {type(exc).__name__}: {exc}") from None
        except RecursionError:  # e.g. a macro that calls itself
            raise TemplateError("template failed to render: it recurses without end (a macro calling "
                                "itself?)") from None


def unknown_template_message(name: str) -> str:
    close = closest(name, FORWARD_LIBRARY)
    msg = f"unknown template name {name!r}; built-in templates: {', '.join(FORWARD_LIBRARY)}"
    if close:
        msg += f"; did you mean {close!r}?"
    return msg + " (inline template text must contain {{ ... }})"


def backward(name: str) -> Template:
    """One of the optimizers' built-in backward templates."""
    return Template.parse(BACKWARD_LIBRARY[name], name)
