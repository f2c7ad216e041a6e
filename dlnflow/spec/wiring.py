"""How a spec's layers are wired: names, inputs, cycles, the output layer, execution order.

Works on the raw ``layers`` list of a spec, which may still be invalid (the compiler runs
these checks even when the schema found problems, so everything is reported in one run);
entries the schema rejects are skipped here.

>>> w = Wiring.from_spec([{"name": "answer", "inputs": ["x", "think"]}, {"name": "think"}])
>>> w.order()
['think', 'answer']
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from dlnflow._util.suggest import did_you_mean
from dlnflow.core.errors import Problem
from dlnflow.graph.layers import INPUT
from dlnflow.spec.document import Document

_REORDER = "the last entry of 'layers' is the output layer; reorder the layers"


@dataclass
class Wiring:
    """The layer mappings (with their index in the spec) and the first index of every name."""

    layers: list[tuple[int, dict[str, Any]]]
    names: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, layers: Any) -> Wiring:
        items = [(i, layer) for i, layer in enumerate(layers if isinstance(layers, list) else [])
                 if isinstance(layer, dict)]
        names: dict[str, int] = {}
        for i, layer in items:
            name = layer.get("name")
            if isinstance(name, str) and name != INPUT and name not in names:
                names[name] = i
        return cls(items, names)

    # -- reading -----------------------------------------------------------------------------
    @staticmethod
    def inputs_of(layer: dict[str, Any]) -> list[str]:
        """The layer's inputs (``["x"]`` when absent; only the texts when the list is malformed)."""
        raw = layer.get("inputs", [INPUT])
        return [v for v in raw if isinstance(v, str)] if isinstance(raw, list) else []

    def reads(self, layer: dict[str, Any]) -> list[str]:
        """The other layers this one reads."""
        return [v for v in self.inputs_of(layer) if v in self.names]

    @property
    def last(self) -> tuple[int, dict[str, Any]] | None:
        return self.layers[-1] if self.layers else None

    def output_classes(self) -> list[str] | None:
        last = self.last
        if last is None:
            return None
        output = last[1].get("output")
        classes = output.get("classes") if isinstance(output, dict) else None
        return [c for c in classes if isinstance(c, str)] if isinstance(classes, list) else None

    def order(self) -> list[str]:
        """Layer names in execution order: dependencies first, otherwise as written."""
        deps = {layer["name"]: set(self.reads(layer)) for _, layer in self.layers}
        ready = [(i, layer["name"]) for i, layer in self.layers if not deps[layer["name"]]]
        heapq.heapify(ready)
        done: list[str] = []
        while ready:
            _, name = heapq.heappop(ready)
            done.append(name)
            for i, layer in self.layers:
                waiting = deps[layer["name"]]
                if name in waiting:
                    waiting.discard(name)
                    if not waiting:
                        heapq.heappush(ready, (i, layer["name"]))
        return done

    # -- checking ----------------------------------------------------------------------------
    def problems(self, doc: Document) -> list[Problem]:
        """Duplicate names, undefined inputs, cycles, misplaced output, unused layers."""
        out: list[Problem] = []
        out += self._duplicates(doc)
        undefined = self._undefined(doc)
        out += undefined
        out += self._cycles(doc)
        out += self._output(doc)
        if not undefined:  # a misspelt input would also make its intended layer look unused
            out += self._unused(doc)
        return out

    def _input_ptr(self, i: int, layer: dict[str, Any], target: str) -> str:
        raw = layer.get("inputs", [])
        k = raw.index(target) if isinstance(raw, list) and target in raw else None
        return f"/layers/{i}/inputs/{k}" if k is not None else f"/layers/{i}/inputs"

    def _duplicates(self, doc: Document) -> list[Problem]:
        out = []
        for i, layer in self.layers:
            name = layer.get("name")
            if isinstance(name, str) and name in self.names and self.names[name] != i:
                first = doc.locate(f"/layers/{self.names[name]}/name")[0]
                out.append(doc.problem(f"/layers/{i}/name", f"duplicate layer name {name!r} (first used on "
                                       f"line {first})", hint="every layer needs its own name"))
        return out

    def _undefined(self, doc: Document) -> list[Problem]:
        out = []
        known = [INPUT, *self.names]
        for i, layer in self.layers:
            for k, value in enumerate(layer.get("inputs") if isinstance(layer.get("inputs"), list) else []):
                if isinstance(value, str) and value != INPUT and value not in self.names:
                    out.append(doc.problem(
                        f"/layers/{i}/inputs/{k}",
                        f"layer {layer.get('name')!r} reads {value!r}, but no layer has that name"
                        + did_you_mean(value, known),
                        hint="an input is 'x' (the dataset input) or a layer name: " + ", ".join(known)))
        return out

    def _cycles(self, doc: Document) -> list[Problem]:
        last = self.last[1].get("name") if self.last else None
        graph: dict[str, list[str]] = {name: [] for name in self.names if name != last}
        for i, layer in self.layers:  # reading the output layer is reported by _output, not as a cycle
            name = layer.get("name")
            if isinstance(name, str) and name in graph and self.names.get(name) == i:
                graph[name] = [n for n in self.reads(layer) if n != last]
        state: dict[str, int] = {}
        seen: set[frozenset[str]] = set()
        out: list[Problem] = []

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            path.append(name)
            for nxt in graph[name]:
                if state.get(nxt) == 1:
                    cycle = path[path.index(nxt):] + [nxt]
                    if frozenset(cycle) not in seen:
                        seen.add(frozenset(cycle))
                        out.append(self._cycle_problem(doc, cycle))
                elif nxt not in state:
                    visit(nxt, path)
            path.pop()
            state[name] = 2

        for name in graph:
            if name not in state:
                visit(name, [])
        return out

    def _cycle_problem(self, doc: Document, cycle: list[str]) -> Problem:
        start = min(cycle[:-1], key=lambda n: self.names[n])
        k = cycle.index(start)
        rotated = cycle[k:-1] + cycle[:k] + [start]
        i = self.names[start]
        layer = dict(self.layers)[i]
        if len(rotated) == 2:
            message = f"layer {start!r} reads itself"
        else:
            cycle_text = " -> ".join(rotated)
            message = f"layers read each other in a cycle ({cycle_text}), so none of them can run first"
        return doc.problem(self._input_ptr(i, layer, rotated[1]), message,
                           hint="a layer may only read 'x' and layers that do not depend on it")

    def _output(self, doc: Document) -> list[Problem]:
        last = self.last
        if last is None:
            return []
        out = []
        n = len(self.layers)
        last_name = last[1].get("name")
        for pos, (i, layer) in enumerate(self.layers[:-1]):
            if "output" in layer:
                name = layer.get("name")
                message = f"only the last layer may have output classes; {name!r} is layer {pos + 1} of {n}"
                hint = _REORDER + " or move 'output'"
                out.append(doc.problem(f"/layers/{i}/output", message, key=True, hint=hint))
            if "demos" in layer:
                name = layer.get("name")
                message = (f"only the last layer may learn demonstrations (they show the data's targets); "
                           f"{name!r} is layer {pos + 1} of {n}")
                out.append(doc.problem(f"/layers/{i}/demos", message, key=True, hint="move 'demos' to the last layer"))
        for i, layer in self.layers:
            if isinstance(last_name, str) and last_name in self.inputs_of(layer) and i != last[0]:
                name = layer.get("name")
                message = f"layer {name!r} reads {last_name!r}, the output layer; nothing may read it"
                out.append(doc.problem(self._input_ptr(i, layer, last_name), message, hint=_REORDER))
        return out

    def _unused(self, doc: Document) -> list[Problem]:
        read: set[str] = set()
        for _, layer in self.layers:
            read.update(self.inputs_of(layer))
        out = []
        for i, layer in self.layers[:-1]:
            name = layer.get("name")
            if isinstance(name, str) and self.names.get(name) == i and name not in read:
                out.append(doc.problem(
                    f"/layers/{i}/name", f"layer {name!r} is not read by any other layer, so its text never "
                    "reaches the output", hint=f"add it to a later layer's inputs, e.g. inputs: [x, {name}]"))
        return out
