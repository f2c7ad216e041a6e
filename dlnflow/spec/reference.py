"""The spec reference: ``docs/spec-reference.md`` rendered from the pipeline JSON Schema.

Every property of the schema becomes an entry with its description, type and constraints,
default, allowed values and examples; every object (the top level, ``models.<name>``,
``data``, ``layers[]``, ``train``...) becomes a section, and conditional rules (``if``/``then``/
``else``) are spelled out. The output depends only on the schema, so a test can compare the
committed file with a fresh rendering. Regenerate with::

    python scripts/render_spec_reference.py

>>> inline("a`b")
'``a`b``'
>>> type_text({"type": ["integer", "null"], "minimum": 1})
'integer or null, at least 1'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnflow.spec.loader import schema

REFERENCE_PATH = Path("docs") / "spec-reference.md"
REGENERATE = "python scripts/render_spec_reference.py"
HEADER = f"""\
# Spec reference

<!-- Generated from schemas/pipeline.schema.json by `{REGENERATE}`. Do not edit by hand. -->

"""


@dataclass
class Section:
    """One object of the spec: its dotted path, its schema and where it is first described."""

    path: str
    node: dict[str, Any]
    entries: list[str] = field(default_factory=list)


# -- small renderers ---------------------------------------------------------------------------
def inline(value: str) -> str:
    """``value`` as inline code, with a fence longer than any backtick run inside."""
    longest = max((len(m) for m in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def literal(value: Any) -> str:
    """A JSON value as inline code (strings quoted only when YAML would need it)."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_./][A-Za-z0-9_./:-]*", value) and \
            value.lower() not in {"yes", "no", "on", "off", "true", "false", "null", "y", "n"}:
        return inline(value)
    return inline(json.dumps(value, ensure_ascii=False))


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading (lower case, punctuation dropped, spaces to dashes)."""
    text = re.sub(r"[^\w\- ]", "", title.lower())
    return text.replace(" ", "-")


def _types(node: dict[str, Any]) -> list[str]:
    kind = node.get("type")
    if isinstance(kind, list):
        return [str(k) for k in kind]
    if isinstance(kind, str):
        return [kind]
    if "const" in node:
        return [_json_type(node["const"])]
    if "enum" in node:
        return sorted({_json_type(v) for v in node["enum"]})
    return []


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def plural(unit: str, n: Any) -> str:
    """``item`` -> ``items`` unless ``n`` is 1 (``entry`` -> ``entries``)."""
    if n == 1 or not unit:
        return unit
    return unit[:-1] + "ies" if unit.endswith("y") else unit + "s"


def constraints(node: dict[str, Any]) -> list[str]:
    """Human wording of the numeric, length and pattern constraints of ``node``."""
    words = {
        "minimum": "at least {}", "exclusiveMinimum": "more than {}", "maximum": "at most {}",
        "exclusiveMaximum": "less than {}", "minLength": "at least {} {}", "minItems": "at least {} {}",
        "maxItems": "at most {} {}", "minProperties": "at least {} {}",
    }
    units = {"minLength": "character", "minItems": "item", "maxItems": "item", "minProperties": "entry"}
    out = [text.format(node[key], plural(units.get(key, ""), node[key])) for key, text in words.items()
           if key in node]
    if node.get("uniqueItems"):
        out.append("no repeated items")
    if "pattern" in node:
        out.append(f"matching {inline(node['pattern'])}")
    if isinstance(node.get("not"), dict) and "const" in node["not"]:
        out.append(f"not {literal(node['not']['const'])}")
    return out


def described(node: dict[str, Any]) -> str:
    """``type_text`` followed by the node's description, if any."""
    desc = node.get("description")
    return type_text(node) + (f": {desc}" if desc else "")


def type_text(node: dict[str, Any]) -> str:
    """``integer or null, at least 1`` and the like."""
    kinds = " or ".join("list" if k == "array" else k for k in _types(node)) or "any"
    if kinds == "object" and isinstance(node.get("additionalProperties"), dict) and "properties" not in node:
        kinds = "mapping"
    return ", ".join([kinds, *constraints(node)])


# -- the walk ----------------------------------------------------------------------------------
class Renderer:
    """Walks the schema from the top, collecting one :class:`Section` per object."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema
        self.sections: list[Section] = []

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while isinstance(node, dict) and "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            node = self.schema["$defs"][name]
        return node

    def link(self, path: str) -> str:
        return f"[{inline(path)}](#{anchor(section_title(path))})"

    def section(self, path: str, node: dict[str, Any]) -> None:
        sec = Section(path, node)
        self.sections.append(sec)
        required = set(node.get("required", []))
        for key, raw in node.get("properties", {}).items():
            if key == "$schema" and path:
                continue
            full = f"{path}.{key}" if path else key
            sec.entries.append(self.entry(full, key in required, raw))

    def entry(self, full: str, required: bool, raw: dict[str, Any]) -> str:
        """Render one property; objects it contains get sections of their own."""
        node = self.resolve(raw)
        desc = str(node.get("description", raw.get("description", "")))
        kind = type_text(node)
        child = self.child(full, node)
        if child is not None:
            kind = f"{child[0]} (see {self.link(child[1])})"
        lines = [f"### {inline(full)}", "", f"- type: {kind}"]
        if required:
            lines.append("- required")
        if "default" in node:
            lines.append(f"- default: {literal(node['default'])}")
        if "const" in node:
            lines.append(f"- must be: {literal(node['const'])}")
        if "enum" in node:
            lines.append("- one of: " + ", ".join(literal(v) for v in node["enum"]))
        lines += self.items_lines(node)
        if node.get("examples"):
            lines.append("- examples: " + "; ".join(literal(v) for v in node["examples"]))
        if desc:
            lines += ["", desc]
        return "\n".join(lines)

    def child(self, full: str, node: dict[str, Any]) -> tuple[str, str] | None:
        """Queue a section for an object value (or list/map of objects); return its type and path."""
        if "properties" in node:
            self.section(full, node)
            return "object", full
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and "properties" in self.resolve(extra):
            self.section(f"{full}.<name>", self.resolve(extra))
            return "mapping of a name to an object", f"{full}.<name>"
        items = node.get("items")
        if isinstance(items, dict) and "properties" in self.resolve(items):
            self.section(f"{full}[]", self.resolve(items))
            return "list of objects" + "".join(f", {c}" for c in constraints(node)), f"{full}[]"
        return None

    def items_lines(self, node: dict[str, Any]) -> list[str]:
        lines: list[str] = []
        items = node.get("items")
        if isinstance(items, dict) and "properties" not in self.resolve(items):
            item = self.resolve(items)
            lines.append(f"- each item: {described(item)}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and "properties" not in self.resolve(extra):
            value = self.resolve(extra)
            lines.append(f"- each value: {described(value)}")
        names = node.get("propertyNames")
        if isinstance(names, dict) and names:
            lines.append(f"- names: {type_text({'type': 'string', **names})}")
        return lines


# -- conditional rules -------------------------------------------------------------------------
def _condition(node: dict[str, Any]) -> str:
    parts = []
    for key, sub in node.get("properties", {}).items():
        if isinstance(sub, dict) and "const" in sub:
            parts.append(f"{inline(key)} is {literal(sub['const'])}")
    return " and ".join(parts) or "the condition holds"


def _consequence(node: dict[str, Any]) -> str:
    parts = []
    if node.get("required"):
        parts.append("requires " + ", ".join(inline(k) for k in node["required"]))
    banned = [k for k, v in node.get("properties", {}).items() if v is False]
    if banned:
        parts.append("does not allow " + ", ".join(inline(k) for k in banned))
    return "; ".join(parts) or "no extra rule"


def rules(node: dict[str, Any]) -> list[str]:
    """Bullet lines for the ``if``/``then``/``else`` rules of an object (also inside ``allOf``)."""
    blocks = [node, *[b for b in node.get("allOf", []) if isinstance(b, dict)]]
    out = []
    for block in blocks:
        if "if" not in block:
            continue
        cond = _condition(block["if"])
        if "then" in block:
            out.append(f"- when {cond}: {_consequence(block['then'])}")
        if "else" in block:
            out.append(f"- otherwise: {_consequence(block['else'])}")
    return out


# -- the page ----------------------------------------------------------------------------------
def section_title(path: str) -> str:
    """The heading of the section of ``path``: ``train`` -> inline-code train, then ``keys``."""
    return "Top-level keys" if not path else f"{inline(path)} keys"


def _section_text(sec: Section) -> str:
    lines = [f"## {section_title(sec.path)}", ""]
    if sec.path and sec.node.get("description"):
        lines += [str(sec.node["description"]), ""]
    if sec.node.get("additionalProperties") is False:
        lines += ["Keys not listed here are errors.", ""]
    found = rules(sec.node)
    if found:
        lines += ["Rules:", "", *found, ""]
    return "\n".join(lines) + "\n" + "\n\n".join(sec.entries) + "\n"


def render_reference(schema: dict[str, Any]) -> str:
    """The whole reference page as markdown."""
    r = Renderer(schema)
    r.section("", schema)
    contents = ["Contents:", ""] + [f"- [{section_title(s.path)}](#{anchor(section_title(s.path))})"
                                    for s in r.sections]
    intro = [str(schema.get("description", "")), "",
             "A spec is a YAML or JSON file (the two are equivalent). Each entry below names a key by its "
             "dotted path; `[]` marks the items of a list and `<name>` a name you choose.", ""]
    body = "\n".join(_section_text(s) for s in r.sections)
    return HEADER + "\n".join(intro + contents) + "\n\n" + body


def render_packaged_schema() -> str:
    """The reference for the schema shipped inside the package."""

    return render_reference(schema())
