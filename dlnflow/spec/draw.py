"""Drawing a compiled pipeline: its layers and how they are wired, as text, Mermaid or Graphviz dot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlnflow.graph.layers import INPUT, Graph, Layer
from dlnflow.spec.pipeline import Pipeline


@dataclass(frozen=True)
class Edge:
    """``source`` feeds ``target``; ``kind`` is ``direct``, ``residual`` (x skipping ahead) or ``skip``."""

    source: str
    target: str
    kind: str


def edges(graph: Graph) -> list[Edge]:
    """Every input of every layer as an edge.

    ``x`` feeding any layer but the first is a residual connection; a layer feeding one
    that does not directly follow it is a skip connection.
    """
    order = [layer.name for layer in graph]
    out = []
    for pos, layer in enumerate(graph):
        for source in layer.inputs:
            if source == INPUT:
                kind = "direct" if pos == 0 else "residual"
            else:
                kind = "direct" if order.index(source) == pos - 1 else "skip"
            out.append(Edge(source, layer.name, kind))
    return out


def template_label(layer: Layer) -> str:
    return layer.template.name or "inline template"


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def as_text(p: Pipeline) -> str:
    """An indented outline."""
    n = len(p.graph)
    layers = f"{n} layer{'s' if n != 1 else ''}"
    head = f"{p.name}  ({layers}, output: {p.graph.output.name}, method {p.train.method})"
    lines = [head, f"  {INPUT}  dataset input ({p.data.format})"]
    kinds = {(e.source, e.target): e.kind for e in edges(p.graph)}
    for layer in p.graph:
        extra = "" if layer.trainable else ", frozen"
        lines.append(f"  {layer.name}  [{template_label(layer)}]  model {layer.model}{extra}")
        reads = [s + ("" if kinds[(s, layer.name)] == "direct" else f" ({kinds[(s, layer.name)]})")
                 for s in layer.inputs]
        lines.append(f"    inputs:  {', '.join(reads)}")
        if layer.classes:
            lines.append(f"    classes: {' | '.join(layer.classes)}")
        else:
            lines.append(f"    writes:  up to {layer.decoding.max_tokens} tokens")
        lines.append(f"    prompt:  {_short(layer.prompt)!r}")
    return "\n".join(lines)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def as_mermaid(p: Pipeline) -> str:
    """A Mermaid ``flowchart LR``; residual and skip inputs are dashed, labelled edges."""
    lines = ["flowchart LR", f'  {INPUT}(["x: input"])']
    for layer in p.graph:
        parts = [layer.name, template_label(layer)]
        if layer.classes:
            parts.append("classes: " + ", ".join(layer.classes))
        shape = ('[["', '"]]') if layer is p.graph.output else ('["', '"]')
        lines.append(f"  {layer.name}{shape[0]}{_mermaid_text('<br/>'.join(parts))}{shape[1]}")
    for e in edges(p.graph):
        arrow = "-->" if e.kind == "direct" else f"-. {e.kind} .->"
        lines.append(f"  {e.source} {arrow} {e.target}")
    return "\n".join(lines)


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def as_dot(p: Pipeline) -> str:
    """Graphviz DOT; residual and skip inputs are dashed, labelled edges."""
    lines = [f'digraph "{_dot_text(p.name)}" {{', "  rankdir=LR;", "  node [shape=box];",
             f'  {INPUT} [label="x\\ninput", shape=ellipse];']
    for layer in p.graph:
        parts = [layer.name, template_label(layer)]
        if layer.classes:
            parts.append("classes: " + ", ".join(layer.classes))
        extra = ", peripheries=2" if layer is p.graph.output else ""
        label = "\\n".join(_dot_text(part) for part in parts)
        lines.append(f'  {layer.name} [label="{label}"{extra}];')
    for e in edges(p.graph):
        style = "" if e.kind == "direct" else f' [style=dashed, label="{e.kind}"]'
        lines.append(f"  {e.source} -> {e.target}{style};")
    lines.append("}")
    return "\n".join(lines)


def as_payload(p: Pipeline) -> dict[str, Any]:
    """The graph as plain data (for ``--json``)."""
    return {
        "name": p.name,
        "output": p.graph.output.name,
        "layers": [{"name": layer.name, "inputs": list(layer.inputs), "template": template_label(layer),
                    "model": layer.model, "trainable": layer.trainable,
                    "classes": list(layer.classes) if layer.classes else None, "prompt": layer.prompt}
                   for layer in p.graph],
        "edges": [{"source": e.source, "target": e.target, "kind": e.kind} for e in edges(p.graph)],
    }


FORMATS = {"text": as_text, "mermaid": as_mermaid, "dot": as_dot}


def draw(pipeline: Pipeline, fmt: str = "text") -> str:
    """``pipeline`` in one of :data:`FORMATS`."""
    return FORMATS[fmt](pipeline)
