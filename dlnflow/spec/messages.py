"""Turning JSON Schema errors into located messages a person can act on.

``jsonschema`` reports what failed in schema terms ("Additional properties are not
allowed"); this module says what is wrong in the spec's terms, points at the right text
(the key itself for unknown keys), offers a did-you-mean, and drops follow-on noise from
``if``/``then``/``else`` branches when the value that chooses the branch is itself wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from jsonschema.exceptions import ValidationError, best_match

from dlnflow._util.pointers import escape, pointer
from dlnflow._util.suggest import did_you_mean
from dlnflow.core.errors import Problem
from dlnflow.spec.document import Document

_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "a text",
    "boolean": "true or false",
    "object": "a mapping (key: value)",
    "array": "a list",
    "null": "null",
}
_YAML_BOOLEAN_WORDS = "yes/no/on/off/true/false"


def describe(value: Any) -> str:
    """How a value reads in a message: its kind and a short rendering.

    >>> describe(True), describe("ten"), describe([1, 2])
    ('true/false (boolean)', "a text ('ten')", 'a list')
    """
    if isinstance(value, bool):
        return "true/false (boolean)"
    if value is None:
        return "null (an empty value)"
    if isinstance(value, int):
        return f"a whole number ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a text ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def _pointer(parts: Iterable[Any]) -> str:

    return pointer(parts)


def _readable(ptr: str) -> str:
    """A pointer as people read it: ``/models/a~1b`` -> ``models/a/b``."""
    return ptr.lstrip("/").replace("~1", "/").replace("~0", "~")


def _escape(key: str) -> str:

    return escape(key)


def _schema_at(root: dict[str, Any], path: Sequence[Any]) -> Any:
    """Follow a schema path through ``root``, resolving local ``$ref`` s on the way."""
    node: Any = root
    for part in path:
        while isinstance(node, dict) and part not in node and "$ref" in node:
            node = _resolve(root, node["$ref"])
        node = node[part]
    return node


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _discriminators(node: Any) -> set[str]:
    """Property names that choose an ``if``/``then``/``else`` branch anywhere in the schema."""
    found: set[str] = set()
    if isinstance(node, dict):
        cond = node.get("if")
        if isinstance(cond, dict):
            found |= set(cond.get("properties", {}))
        for value in node.values():
            found |= _discriminators(value)
    elif isinstance(node, list):
        for value in node:
            found |= _discriminators(value)
    return found


def _branch(error: ValidationError) -> str | None:
    parts = [p for p in error.absolute_schema_path if p in ("then", "else")]
    return str(parts[-1]) if parts else None


def _drop_branch_noise(errors: list[ValidationError], root: dict[str, Any]) -> list[ValidationError]:
    """Forget branch errors of objects whose branch-choosing key is itself wrong or missing."""
    keys = _discriminators(root)
    broken: set[tuple[Any, ...]] = set()
    for e in errors:
        path = tuple(e.absolute_path)
        if path and path[-1] in keys and _branch(e) is None:
            broken.add(path[:-1])
        if e.validator == "required" and _branch(e) is None and _missing(e) & keys:
            broken.add(path)
    return [e for e in errors
            if _branch(e) is None or not any(tuple(e.absolute_path)[: len(b)] == b for b in broken)]


def _missing(error: ValidationError) -> set[str]:
    inst = error.instance if isinstance(error.instance, dict) else {}
    return {str(p) for p in error.validator_value if p not in inst}


def _condition(error: ValidationError, root: dict[str, Any]) -> tuple[str, Any, str]:
    """For a branch error: (choosing key, the value that picks ``then``, "then"|"else")."""
    path = list(error.absolute_schema_path)
    idx = max(i for i, p in enumerate(path) if p in ("then", "else"))
    node = _schema_at(root, path[:idx])
    while "if" not in node and "$ref" in node:
        node = _resolve(root, node["$ref"])
    cond = node["if"]
    key, sub = next(iter(cond["properties"].items()))
    return key, sub.get("const"), str(path[idx])


def _first_sentence(text: str | None) -> str | None:
    if not text:
        return None
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0]


class _Translator:
    """Builds :class:`Problem` s for one document."""

    def __init__(self, doc: Document, root: dict[str, Any], prefix: str = ""):
        self.doc = doc
        self.root = root
        self.prefix = prefix

    def __call__(self, e: ValidationError) -> list[Problem]:
        ptr = self.prefix + _pointer(e.absolute_path)
        if e.schema is False:
            return self.forbidden(e, ptr)
        if "propertyNames" in e.absolute_schema_path:
            rule = self.custom(e) or str(e.message)
            where = f"{ptr}/{_escape(str(e.instance))}"
            return [self.at(where, f"{e.instance!r} is not a valid name: {rule}", key=True)]
        handler = getattr(self, f"on_{e.validator}", None)
        if handler is None and e.context:
            return self(best_match(e.context))
        if handler is None:
            return [self.at(ptr, str(e.message))]
        result: list[Problem] = handler(e, ptr)
        return result

    def at(self, ptr: str, message: str, key: bool = False, hint: str | None = None) -> Problem:
        return self.doc.problem(ptr, message, key=key, hint=hint)

    def custom(self, e: ValidationError) -> str | None:
        schema = e.schema if isinstance(e.schema, dict) else {}
        message = schema.get("errorMessage")
        return str(message) if message else None

    # -- one method per JSON Schema keyword ---------------------------------------------------
    def on_additionalProperties(self, e: ValidationError, ptr: str) -> list[Problem]:
        allowed = list(e.schema.get("properties", {}))
        where = f"under {_readable(ptr)!r}" if ptr else "at the top level"
        out = []
        for key in e.instance:
            if key in allowed:
                continue
            message = f"unknown key {key!r} {where}" + did_you_mean(key, allowed)
            if key == "<<":
                message = "YAML merge keys (<<) are not supported in specs; write the keys out"
            out.append(self.at(f"{ptr}/{_escape(key)}", message, key=True,
                               hint="allowed keys: " + ", ".join(allowed)))
        return out

    def forbidden(self, e: ValidationError, ptr: str) -> list[Problem]:
        """A key that a ``then``/``else`` branch sets to ``false``: valid elsewhere, not here."""
        branch_schema = _schema_at(self.root, list(e.absolute_schema_path)[:-1])
        props = branch_schema.get("properties", {})
        parent = self._instance(ptr)
        key_name, _, _ = _condition(e, self.root)
        actual = parent.get(key_name, self._default(e, key_name)) if isinstance(parent, dict) else None
        out = []
        for key in (parent or {}):
            if props.get(key) is False:
                hint = _first_sentence(self._described(e, key))
                message = f"{key!r} does not apply when {key_name} is {actual!r}"
                out.append(self.at(f"{ptr}/{_escape(key)}", message, key=True, hint=hint))
        return out

    def on_required(self, e: ValidationError, ptr: str) -> list[Problem]:
        out = []
        for name in sorted(_missing(e)):
            where = f"{_readable(ptr)!r}" if ptr else "the spec"
            message = f"{where} is missing the required key {name!r}"
            if _branch(e):
                key_name, value, branch = _condition(e, self.root)
                when = "needed when" if branch == "then" else "needed unless"
                message += f" ({when} {key_name} is {value!r})"
            hint = _first_sentence(self._described(e, name))
            out.append(self.at(ptr, message, key=True, hint=hint))
        return out

    def on_enum(self, e: ValidationError, ptr: str) -> list[Problem]:
        allowed = [str(v) for v in e.validator_value]
        message = f"{e.instance!r} is not one of: {', '.join(allowed)}" + did_you_mean(e.instance, allowed)
        return [self.at(ptr, message)]

    def on_const(self, e: ValidationError, ptr: str) -> list[Problem]:
        return [self.at(ptr, (self.custom(e) or f"must be {e.validator_value!r}") + f", not {e.instance!r}")]

    def on_type(self, e: ValidationError, ptr: str) -> list[Problem]:
        wanted = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in wanted)
        hint = None
        if isinstance(e.instance, bool) and "string" in wanted:
            hint = f"YAML reads unquoted {_YAML_BOOLEAN_WORDS} as booleans; put the word in quotes"
        elif e.instance is None and "null" not in wanted:
            hint = "an empty value in YAML is null; give it a value or remove the key"
        return [self.at(ptr, f"expected {words}, got {describe(e.instance)}", hint=hint)]

    def on_pattern(self, e: ValidationError, ptr: str) -> list[Problem]:
        rule = self.custom(e) or f"it must match {e.validator_value}"
        return [self.at(ptr, f"{e.instance!r} is not a valid name: {rule}")]

    def on_not(self, e: ValidationError, ptr: str) -> list[Problem]:
        rule = self.custom(e) or "this value is not allowed here"
        return [self.at(ptr, f"{e.instance!r} is not allowed: {rule}")]

    def on_minItems(self, e: ValidationError, ptr: str) -> list[Problem]:
        n = e.validator_value
        if not e.instance:
            return [self.at(ptr, f"the list is empty; it needs at least {n} item{'s' if n != 1 else ''}")]
        return [self.at(ptr, f"needs at least {n} items, got {len(e.instance)}")]

    def on_uniqueItems(self, e: ValidationError, ptr: str) -> list[Problem]:
        seen: list[Any] = []
        for i, item in enumerate(e.instance):
            if item in seen:
                return [self.at(f"{ptr}/{i}", f"{item!r} is listed more than once")]
            seen.append(item)
        return [self.at(ptr, "items must be unique")]

    def on_minimum(self, e: ValidationError, ptr: str) -> list[Problem]:
        return [self.at(ptr, f"must be at least {e.validator_value}, got {e.instance}")]

    def on_exclusiveMinimum(self, e: ValidationError, ptr: str) -> list[Problem]:
        return [self.at(ptr, f"must be greater than {e.validator_value}, got {e.instance}")]

    def on_maximum(self, e: ValidationError, ptr: str) -> list[Problem]:
        return [self.at(ptr, f"must be at most {e.validator_value}, got {e.instance}")]

    def on_minLength(self, e: ValidationError, ptr: str) -> list[Problem]:
        return [self.at(ptr, "must not be empty")]

    def on_minProperties(self, e: ValidationError, ptr: str) -> list[Problem]:
        return [self.at(ptr, "must not be empty; remove the key or add entries", key=True)]

    # -- helpers ------------------------------------------------------------------------------
    def _instance(self, ptr: str) -> Any:
        node: Any = self.doc.data
        for part in ptr.split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def _object_schema(self, e: ValidationError) -> dict[str, Any]:
        """The schema of the object a branch error is about (the one holding ``properties``)."""
        path = list(e.absolute_schema_path)
        cut = max((i for i, p in enumerate(path) if p in ("then", "else")), default=len(path))
        while cut > 0 and (isinstance(path[cut - 1], int) or path[cut - 1] == "allOf"):
            cut -= 1
        try:
            node = _schema_at(self.root, path[:cut])
            while isinstance(node, dict) and "$ref" in node and "properties" not in node:
                node = _resolve(self.root, node["$ref"])
        except (KeyError, IndexError, TypeError):  # a path relative to a sub-schema (grid values)
            return {}
        return node if isinstance(node, dict) else {}

    def _described(self, e: ValidationError, key: str) -> str | None:
        sub = self._object_schema(e).get("properties", {}).get(key)
        if sub is None and isinstance(e.schema, dict):
            sub = e.schema.get("properties", {}).get(key)
        while isinstance(sub, dict) and "description" not in sub and "$ref" in sub:
            sub = _resolve(self.root, sub["$ref"])
        return sub.get("description") if isinstance(sub, dict) else None

    def _default(self, e: ValidationError, key: str) -> Any:
        sub = self._object_schema(e).get("properties", {}).get(key)
        return sub.get("default") if isinstance(sub, dict) else None


def problems_from_errors(
    doc: Document, errors: list[ValidationError], root: dict[str, Any], prefix: str = ""
) -> list[Problem]:
    """Located problems for ``errors`` (branch noise removed).

    ``prefix`` is the pointer of the value that was validated, when it is not the whole
    document (a grid value checked against its setting's schema, say).
    """
    translate = _Translator(doc, root, prefix)
    out: list[Problem] = []
    for e in _drop_branch_noise(errors, root):
        out.extend(translate(e))
    return out
