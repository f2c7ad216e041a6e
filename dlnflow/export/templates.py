"""A layer's template as parts the exported DSPy program can render without Jinja.

The exported program imports only ``dspy`` and the standard library, so it cannot run Jinja.
A template is taken apart into literal text, ``{{ prompt }}``, ``{{ <input> }}`` and the
built-in templates' labelled inputs block; anything else (filters, conditions, loops of its
own, ``{{ inputs }}`` printed as is) raises :class:`Unmappable`, which the exporter turns into
an error located at the layer's ``/layers/<i>/template``.

>>> template_parts(Template.from_spec("{{ prompt }}\\nQ: {{ x }}\\nA:"), ("x",))
(('prompt',), ('text', '\\nQ: '), ('value', 'x'), ('text', '\\nA:'))
"""

from __future__ import annotations

import jinja2
from jinja2 import nodes

from dlnflow.graph.templates import FORWARD_LIBRARY, Template

__all__ = ["Unmappable", "template_parts"]

# The same lexer settings as dlnflow's template environment (a final newline is dropped).
_PARSER = jinja2.Environment(autoescape=False, keep_trailing_newline=False)


class Unmappable(Exception):
    """A template feature the exported program cannot reproduce."""


def _inputs_block() -> nodes.Node:
    """The built-in templates' loop that writes one ``Label: text`` line per input."""
    return next(n for n in _PARSER.parse(FORWARD_LIBRARY["forward"]).body if isinstance(n, nodes.For))


def template_parts(template: Template, inputs: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """The template as literal text, ``{{ prompt }}``, ``{{ <input> }}`` and the inputs block.

    Raises :class:`Unmappable` naming the first feature it cannot express.
    """
    block = _inputs_block()
    parts: list[tuple[str, ...]] = []
    for node in _PARSER.parse(template.source).body:
        if node == block:
            parts.append(("inputs",))
        elif isinstance(node, nodes.Output):
            parts.extend(_output_part(child, inputs) for child in node.nodes)
        else:
            raise Unmappable(f"its {_describe(node)} has no counterpart in the exported program")
    return tuple(p for p in parts if p != ("text", ""))


def _output_part(node: nodes.Node, inputs: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(node, nodes.TemplateData):
        return ("text", node.data)
    if isinstance(node, nodes.Name) and node.name == "prompt":
        return ("prompt",)
    if isinstance(node, nodes.Name) and node.name in inputs:
        return ("value", node.name)
    if isinstance(node, nodes.Name):
        raise Unmappable(f"it prints {{{{ {node.name} }}}} directly; use the input names or the built-in templates")
    raise Unmappable(f"its {_describe(node)} has no counterpart in the exported program")


def _describe(node: nodes.Node) -> str:
    kinds = {nodes.Filter: "filter", nodes.If: "{% if %} block", nodes.CondExpr: "inline if",
             nodes.For: "{% for %} loop", nodes.Macro: "macro", nodes.Assign: "{% set %}", nodes.Call: "function call",
             nodes.Getattr: "attribute access", nodes.Getitem: "item access"}
    for kind, words in kinds.items():
        if isinstance(node, kind):
            return words
    return f"{type(node).__name__} expression"
