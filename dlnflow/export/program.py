"""Write an :class:`~dlnflow.export.to_dspy.ExportPlan` as the Python source of ``program.py``.

The file is assembled by plain string building: a header, the network as data
(``INSTRUCTIONS``, ``LAYERS``, ``MODELS``), the fixed runtime of
:mod:`dlnflow.export.runtime`, one ``dspy.Signature`` per layer, the ``dspy.Module``
that chains them, and a command line. Literals are laid out to stay within 120 columns
(long prompts become implicitly joined string pieces), so the file passes ``ruff check``;
the same plan always gives the same bytes.

>>> print(py_value({"a": [1, None], "b": "x"}, 0))
{"a": [1, None], "b": "x"}
>>> print(py_value("word " * 30, 0))
(
    "word word word word word word word word word word word word word word word word word word word word word word "
    "word word word word word word word word "
)
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from dlnflow._version import __version__
from dlnflow.export.plan import ExportPlan, LayerPlan
from dlnflow.export.runtime import RENDERING, RUNTIME

WIDTH = 120
DEFAULT_API_BASE = "http://127.0.0.1:8000/v1"
_PIECES = re.compile(r"[^ \n]*(?: +|\n|$)")


# -- literals ----------------------------------------------------------------------------------
def q(text: str) -> str:
    """A string literal, in double quotes unless the text holds a double quote.

    >>> print(q("it's"), q('say "hi"'), q("a\\nb"))
    "it's" 'say "hi"' "a\\nb"
    """
    literal = repr(text)
    if literal.startswith("'") and '"' not in text:
        return '"' + literal[1:-1] + '"'
    return literal


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{q(k)}: {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return q(value) if isinstance(value, str) else repr(value)


def _chunks(text: str, limit: int) -> list[str]:
    """Pieces of ``text`` whose literals fit in ``limit`` columns, broken after spaces and newlines."""
    out: list[str] = []
    current = ""
    for word in (w for w in _PIECES.findall(text) if w):
        while len(q(word)) > limit:  # one very long word: cut it
            cut = limit - 2
            while len(q(word[:cut])) > limit:
                cut -= 1
            if current:
                out.append(current)
                current = ""
            out.append(word[:cut])
            word = word[cut:]
        if current and len(q(current + word)) > limit:
            out.append(current)
            current = ""
        current += word
    if current or not out:
        out.append(current)
    return out


def py_value(value: Any, indent: int, used: int | None = None) -> str:
    """``value`` as a Python literal starting on a line indented by ``indent`` columns.

    ``used`` is how many columns of that line come before the literal (default: ``indent``);
    one more column is kept for a trailing comma.
    """
    room = WIDTH - (indent if used is None else used) - 1
    inline = _inline(value)
    if len(inline) <= room or not isinstance(value, str | dict | list | tuple):
        return inline
    pad = " " * (indent + 4)
    if isinstance(value, str):
        pieces = _chunks(value, WIDTH - len(pad))
        return "(\n" + "".join(f"{pad}{q(p)}\n" for p in pieces) + " " * indent + ")"
    if isinstance(value, dict):
        lines = ["{"]
        for k, v in value.items():
            key = f"{q(k)}: "
            lines.append(f"{pad}{key}{py_value(v, indent + 4, len(pad) + len(key))},")
        return "\n".join([*lines, " " * indent + "}"])
    lines = ["["] + [f"{pad}{py_value(v, indent + 4)}," for v in value]
    return "\n".join([*lines, " " * indent + "]"])


def assign(name: str, annotation: str, value: Any) -> str:
    """``NAME: annotation = <literal>``."""
    head = f"{name}: {annotation} = "
    return head + py_value(value, 0, len(head))


# -- pieces of the program ---------------------------------------------------------------------
def class_name(name: str) -> str:
    """A class name from a pipeline or layer name.

    >>> class_name("quickstart-dln2"), class_name("2 layers")
    ('QuickstartDln2', 'Net2Layers')
    """
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    text = "".join(w[:1].upper() + w[1:] for w in words) or "Network"
    return text if text[0].isalpha() else "Net" + text


def _plain(text: str) -> str:
    """A file name as it may appear in a comment: one line, ASCII."""
    return text.encode("unicode_escape").decode("ascii")


def _comment(text: str) -> str:
    """``text`` as ``#`` comment lines of at most 120 columns."""
    return "".join(f"# {line}\n" for line in textwrap.wrap(text, WIDTH - 2, break_on_hyphens=False))


def _header(plan: ExportPlan) -> str:
    spec = _plain(plan.spec_file)
    if plan.lock_file:
        source = f"the learned prompts in {_plain(plan.lock_file)} (sha256 {plan.lock_sha256})"
    else:
        source = f"the prompts written in {spec} (there was no lock file beside it)"
    chain = " -> ".join(p.name for p in plan.layers)
    return (
        _comment(f"Generated by `dlnflow export --to dspy` (dlnflow {__version__}) from {spec} "
                 f"(sha256 {plan.spec_sha256}).")
        + _comment(f"Instructions: {source}.")
        + _comment("Re-export after training rather than editing this file by hand.")
        + f'"""The {plan.name!r} Deep Language Network as a DSPy program ({chain}).\n\n'
        "Run it against an OpenAI-compatible server that serves the spec's model:\n\n"
        f'    python program.py --api-base {DEFAULT_API_BASE} "some input"\n\n'
        "or from Python:\n\n"
        f"    program = {class_name(plan.name)}()\n"
        "    with dspy.context(lm=make_lm(api_base=...)):\n"
        "        prediction = program(x=...)\n\n"
        "See README.md beside this file for what the mapping from dlnflow keeps and leaves out.\n"
        '"""\n'
    )


def _imports(plan: ExportPlan) -> str:
    typing_names = "Any, Literal" if any(p.classes for p in plan.layers) else "Any"
    return (
        "from __future__ import annotations\n\n"
        "import argparse\nimport asyncio\nimport contextlib\nimport json\nimport os\nimport sys\n"
        "import urllib.error\nimport urllib.request\nfrom collections.abc import Iterator, Sequence\n"
        f"from typing import {typing_names}\n\n"
        "import dspy\nfrom dspy import lm15\nfrom dspy.utils.exceptions import AdapterParseError\n"
    )


def _data(plan: ExportPlan) -> str:
    max_tokens = max(p.decoding["max_tokens"] for p in plan.layers)
    lines = [
        f"NAME = {q(plan.name)}",
        f"SPEC = {q(plan.spec_file)}",
        f"INSTRUCTIONS_FROM = {q(plan.instructions_from)}  # lock: learned prompts; spec: the spec's own",
        f"OUTPUT_LAYER = {q(plan.output.name)}",
        f"DEFAULT_MODEL = {q(plan.default_model)}",
        f"DEFAULT_API_BASE = {q(DEFAULT_API_BASE)}",
        f"MAX_TOKENS = {max_tokens}",
        "",
        "# The learned instruction of each layer (the dlnflow parameter `<layer>.prompt`).",
        assign("INSTRUCTIONS", "dict[str, str]", {p.name: p.instruction for p in plan.layers}),
        "",
        "# How each layer renders its prompt and reads its answer. template parts: literal text, the",
        "# instruction, one input's text, or the labelled block of all inputs; read: text (stripped",
        "# completion), score (the most probable class by next-token alternatives) or label (the class",
        "# a short greedy completion starts with).",
        assign("LAYERS", "dict[str, dict[str, Any]]", {p.name: p.data() for p in plan.layers}),
        "",
        "# The spec's models (never a key: only the name of the variable that holds it).",
        assign("MODELS", "dict[str, dict[str, Any]]", plan.models),
    ]
    return "\n".join(lines) + "\n"


def _input_desc(name: str) -> str:
    return "the input" if name == "x" else f"the text written by layer {name!r}"


def _output(plan_layer: LayerPlan, is_last: bool) -> tuple[str, str]:
    """(type annotation, description) of a layer's output field."""
    if plan_layer.classes:
        return ("Literal[" + ", ".join(q(c) for c in plan_layer.classes) + "]",
                "one of: " + ", ".join(plan_layer.classes))
    return "str", ("the answer" if is_last else "intermediate text for the next layers")


def _signature(plan_layer: LayerPlan, is_last: bool) -> str:
    pad = " " * 12
    lines = [f"    {q(plan_layer.name)}: dspy.Signature(", "        {"]
    for name, field in plan_layer.fields.items():
        lines.append(f"{pad}{q(field)}: (str, dspy.InputField(desc={q(_input_desc(name))})),")
    kind, desc = _output(plan_layer, is_last)
    out = f"{pad}{q(plan_layer.field)}: ({kind}, dspy.OutputField(desc={q(desc)})),"
    if len(out) > WIDTH:
        out = (f"{pad}{q(plan_layer.field)}: (\n{pad}    {kind},\n{pad}    dspy.OutputField(desc={q(desc)}),\n{pad}),")
    lines += [out, "        },", f"        INSTRUCTIONS[{q(plan_layer.name)}],",
              f"        signature_name={q(class_name(plan_layer.name) + 'Signature')},", "    ),"]
    return "\n".join(lines)


def _signatures(plan: ExportPlan) -> str:
    body = "\n".join(_signature(p, i == len(plan.layers) - 1) for i, p in enumerate(plan.layers))
    return ("# One signature per layer: its inputs, its one output, its instruction.\n"
            "SIGNATURES: dict[str, type[dspy.Signature]] = {\n" + body + "\n}\n")


def _call(plan_layer: LayerPlan) -> str:
    args = ", ".join(f"{field}={field}" for field in plan_layer.fields.values())
    return f"            {plan_layer.field} = self.{plan_layer.field}({args}).{plan_layer.field}"


def _module(plan: ExportPlan) -> str:
    cls = class_name(plan.name)
    chain = " -> ".join(p.name for p in plan.layers)
    predictors = "\n".join(f"        self.{p.field} = dspy.Predict(SIGNATURES[{q(p.name)}])" for p in plan.layers)
    calls = "\n".join(_call(p) for p in plan.layers)
    outputs = ", ".join(f"{p.field}={p.field}" for p in plan.layers)
    return f'''class {cls}(dspy.Module):
    """The {plan.name!r} network: {chain}. Each layer reads the texts named in its inputs.

    By default every layer formats its prompt with dlnflow's template (``DlnflowAdapter``);
    ``use_dspy_adapter=True`` leaves formatting to the adapter DSPy is configured with.
    """

    def __init__(self, use_dspy_adapter: bool = False) -> None:
        super().__init__()
        self.adapter = None if use_dspy_adapter else DlnflowAdapter()
{predictors}

    @contextlib.contextmanager
    def _formatting(self) -> Iterator[None]:
        if self.adapter is None:
            yield
        else:
            with dspy.context(adapter=self.adapter):
                yield

    def forward(self, x: str) -> dspy.Prediction:
        """Every layer's text; ``.{plan.output.field}`` is the network's answer."""
        with self._formatting():
{calls}
        return dspy.Prediction({outputs})
'''


def _main(plan: ExportPlan) -> str:
    cls = class_name(plan.name)
    return f'''def main(argv: Sequence[str] | None = None) -> int:
    """Run the network on one input and print each hidden layer's text, then the answer."""
    default_base = MODELS[DEFAULT_MODEL]["base_url"] or DEFAULT_API_BASE
    parser = argparse.ArgumentParser(description=f"Run the {{NAME!r}} network (exported by dlnflow) on one input.")
    parser.add_argument("input", help="the input text (x)")
    parser.add_argument("--api-base", help=f"the OpenAI-compatible API root [default: {{default_base}}]")
    default_model = MODELS[DEFAULT_MODEL]["model"]
    parser.add_argument("--model", help=f"the model name the server knows [default: {{default_model}}]")
    parser.add_argument("--dspy-adapter", action="store_true",
                        help="format prompts with DSPy's own adapter instead of dlnflow's templates")
    parser.add_argument("--json", action="store_true", help="print every layer's text as JSON")
    args = parser.parse_args(argv)
    program = {cls}(use_dspy_adapter=args.dspy_adapter)
    try:
        with dspy.context(lm=make_lm(args.api_base, args.model)):
            prediction = program(x=args.input)
    except Exception as exc:  # one readable line instead of a traceback
        print(f"error: {{type(exc).__name__}}: {{exc}}", file=sys.stderr)
        return 1
    texts = {{layer: prediction[spec["field"]] for layer, spec in LAYERS.items()}}
    if args.json:
        print(json.dumps(texts, indent=2, ensure_ascii=False))
        return 0
    for layer, text in texts.items():
        if layer != OUTPUT_LAYER:
            print(f"[{{layer}}] {{text}}")
    print(texts[OUTPUT_LAYER])
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def render_program(plan: ExportPlan) -> str:
    """The whole ``program.py``."""
    sections = [_header(plan) + "\n" + _imports(plan), _data(plan), RENDERING.strip("\n") + "\n",
                RUNTIME.strip("\n") + "\n", _signatures(plan), _module(plan), _main(plan)]
    return "\n\n\n".join(s.rstrip("\n") for s in sections) + "\n"
