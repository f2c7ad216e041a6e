"""Demonstrations: worked examples a layer shows before the input it answers, learned like its prompt.

A layer with ``demos: {k: 4}`` holds ``k`` examples drawn from the training split. Each keeps a
stable id (:func:`example_id`, a digest of its input and target), so the lock file can name the
examples it chose and ``dlnflow status`` can tell when the data no longer holds them.

Demonstrations are rendered in the layer's own format: the layer's template renders each
demonstration's input exactly as it renders the example being answered, followed by the
demonstration's target, and the blocks come after the instruction and before the real input.
With the built-in ``classify_forward`` template::

    Answer with the colour that belongs to the word: blue or red.

    Input: cat
    Answer: blue

    Input: kiwi
    Answer: red

    Input: sparrow
    Answer:

A demonstration holds only the data's input; a layer that also reads other layers shows those
inputs empty in its demonstrations (the optimizers have no hidden text for a training example).

In a graph's state the demonstrations of layer ``answer`` are the parameter ``answer.demos``, a
JSON text (:func:`demos_text`) so that every state value stays a string.

>>> d = Demo.of("cat", "blue")
>>> d.id == example_id("cat", "blue"), len(d.id)
(True, 16)
>>> parse_demos(demos_text([d])) == (d,)
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dlnflow.core.errors import LockError
from dlnflow.graph.templates import Template

_MARK = "\x00dlnflow-instruction\x00"
DEMOS = "demos"
"""The name of a layer's demonstrations parameter (``<layer>.demos``)."""


def example_id(input: str, target: str) -> str:
    """A stable id of one example: the first 16 hex digits of the sha256 of its input and target.

    >>> example_id("cat", "blue")
    '641bc8babf81a210'
    """
    blob = json.dumps([input, target], ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Demo:
    """One demonstration: a training example's id, input and target."""

    id: str
    input: str
    target: str

    @classmethod
    def of(cls, input: str, target: str) -> Demo:
        return cls(example_id(input, target), input, target)

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "input": self.input, "target": self.target}


def demos_text(demos: Sequence[Demo]) -> str:
    """The state value of a demonstrations parameter: canonical JSON (same demos, same text)."""
    return json.dumps([d.as_dict() for d in demos], ensure_ascii=False, sort_keys=True)


def parse_demos(value: Any) -> tuple[Demo, ...]:
    """Demonstrations from a state value (JSON text) or a lock entry (a list of mappings).

    >>> parse_demos('[{"id": "x"}]')
    Traceback (most recent call last):
    ...
    dlnflow.core.errors.LockError: demonstrations must be a list of {id, input, target} strings
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise LockError("demonstrations are not valid JSON") from None
    out = []
    for item in value if isinstance(value, list) else [None]:
        if not (isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("id", "input", "target"))):
            raise LockError("demonstrations must be a list of {id, input, target} strings")
        out.append(Demo(item["id"], item["input"], item["target"]))
    return tuple(out)


def demo_block(template: Template, demo: Demo, input_names: Sequence[str], input_name: str = "x"
               ) -> tuple[str, str]:
    """One demonstration as the template renders an example, then its target; and the separator the
    template puts between its instruction and an example (so blocks are spaced the template's way).

    >>> t = Template.from_spec("classify_forward")
    >>> sep, block = demo_block(t, Demo.of("cat", "blue"), ["x"])
    >>> sep, block
    ('\\n\\n', 'Input: cat\\nAnswer: blue')
    """
    values = {name: (demo.input if name == input_name else "") for name in input_names}
    pairs = [(input_name, demo.input)] if input_name in values else []
    text = template.render(prompt=_MARK, inputs=pairs, **values)
    body = text.split(_MARK, 1)[1] if _MARK in text else text
    sep = body[: len(body) - len(body.lstrip())] or "\n\n"
    return sep, body.strip() + " " + demo.target.strip()


def with_demos(prompt: str, blocks: Sequence[str], sep: str = "\n\n") -> str:
    """The instruction followed by the rendered demonstrations (what the template gets as ``prompt``).

    >>> with_demos("Do it.", ["Input: a\\nAnswer: b"])
    'Do it.\\n\\nInput: a\\nAnswer: b'
    """
    if not blocks:
        return prompt
    shown = sep.join(blocks)
    return f"{prompt.rstrip()}{sep}{shown}" if prompt.strip() else shown
