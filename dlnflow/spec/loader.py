"""Loading a pipeline spec (YAML or JSON) while keeping where every value came from.

:func:`load_document` reads the file and returns a :class:`Document`: the plain data plus a
map from JSON pointers to ``(line, col)``, so any later check can point at the offending
text. Problems found while reading (YAML/JSON syntax, duplicate keys, merge-conflict markers,
an empty file, a top level that is not a mapping, bytes that are not UTF-8) are raised at
once as :class:`~dlnflow.core.errors.SpecError` when no data can be recovered; duplicate keys are
kept in ``Document.problems`` so they are reported together with everything else.

:func:`schema_problems` validates the data against ``pipeline.schema.json`` (Draft 2020-12)
and turns *all* errors into located, human :class:`~dlnflow.core.errors.Problem` s; the wording
lives in :mod:`dlnflow.spec.messages`.

>>> import tempfile, os
>>> with tempfile.TemporaryDirectory() as d:
...     path = os.path.join(d, "p.yaml")
...     _ = open(path, "w").write("version: 1\\nname: demo\\nlayers:\\n  - name: answer\\n")
...     doc = load_document(path)
...     doc.locate("/layers/0/name"), doc.data["name"]
((4, 11), 'demo')
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from dlnflow._util.pointers import escape
from dlnflow.core.errors import Problem, SpecError
from dlnflow.core.registry import BACKENDS, LOSSES, OPTIMIZERS
from dlnflow.spec.document import Document, sort_problems
from dlnflow.spec.messages import problems_from_errors

_CONFLICT = re.compile(r"^(<{7}|={7}|>{7})(?:[ \t].*)?$")


# -- reading ---------------------------------------------------------------------------------
def _fail(file: str, line: int, col: int, message: str, text: str = "", hint: str | None = None) -> SpecError:
    lines = text.splitlines()
    source = lines[line - 1] if 0 < line <= len(lines) else None
    return SpecError([Problem(file, line, col, "", message, source, hint)])


def read_text(path: Path, file: str) -> str:
    """The file as text; unreadable files and bad UTF-8 become a located :class:`SpecError`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(file, 0, 0, "file not found") from None
    except IsADirectoryError:
        raise _fail(file, 0, 0, "this is a folder, not a spec file") from None
    except OSError as exc:
        raise _fail(file, 0, 0, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        text = raw.decode("utf-8", errors="replace")
        raise _fail(file, line, col, f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})", text,
                    "save the file with UTF-8 encoding") from None


def conflict_problems(text: str, file: str) -> list[Problem]:
    """Leftover git merge-conflict markers, one problem per conflict."""
    problems: list[Problem] = []
    open_line = 0
    for n, line in enumerate(text.splitlines(), start=1):
        m = _CONFLICT.match(line)
        if not m:
            continue
        mark = m.group(1)[0]
        if mark == "<":
            open_line = n
        elif mark == ">" or not open_line:
            start = open_line or n
            problems.append(Problem(
                file, start, 1, "", f"unresolved git merge conflict (lines {start}-{n})",
                text.splitlines()[start - 1],
                "keep the side you want and delete the <<<<<<<, ======= and >>>>>>> lines"))
            open_line = 0 if mark == ">" else open_line
    if open_line:
        problems.append(Problem(file, open_line, 1, "", "unresolved git merge conflict (no closing >>>>>>>)",
                                text.splitlines()[open_line - 1],
                                "keep the side you want and delete the conflict marker lines"))
    return problems


def _yaml_problem(exc: yaml.MarkedYAMLError, file: str, text: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    problem = exc.problem or exc.context or "unreadable YAML"
    message, hint = f"YAML syntax error: {problem}", None
    if "'\\t'" in problem:
        hint = "indent with spaces; YAML does not allow tabs for indentation"
    elif "mapping values are not allowed" in problem:
        hint = "a value containing ': ' must be put in quotes"
    elif "another document" in problem:
        message = "YAML syntax error: a second document starts here, but a spec is a single document"
        hint = "remove the '---' line (and merge what follows into the first document)"
    elif "could not determine a constructor" in problem:
        message = f"YAML error: {problem}"
        hint = "remove the tag; a spec uses plain values (text, numbers, lists, mappings)"
    elif exc.context:
        hint = exc.context + (f" (line {exc.context_mark.line + 1})" if exc.context_mark else "")
    return _fail(file, line, col, message, text, hint)


class _Walker:
    """Builds plain data from a composed YAML node, recording positions and duplicate keys."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.constructor = yaml.constructor.SafeConstructor()

    def walk(self, node: yaml.Node, ptr: str) -> Any:
        self.doc.values[ptr] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, ptr)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, f"{ptr}/{i}") for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.style:
            self.doc.styles[ptr] = node.style
        return self.constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, ptr: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                message = "a key must be a plain name, not a list or mapping"
                self.doc.problems.append(self._at(where, ptr, message))
                continue
            child = f"{ptr}/{escape(key)}"
            if key in out:
                first = self.doc.keys[child]
                self.doc.problems.append(self._at(
                    where, child, f"duplicate key {key!r} (first defined at line {first[0]}, col {first[1]})",
                    "a later value silently replaces the earlier one; keep only one"))
            self.doc.keys[child] = where
            out[key] = self.walk(value_node, child)
        return out

    def _at(self, where: tuple[int, int], ptr: str, message: str, hint: str | None = None) -> Problem:
        return Problem(self.doc.file, where[0], where[1], ptr, message, self.doc.source_line(where[0]), hint)


def _compose(text: str) -> yaml.Node | None:
    loader = yaml.SafeLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def load_document(path: str | Path, file: str | None = None) -> Document:
    """Read and parse a spec, keeping positions. Raises :class:`SpecError` if nothing usable is left."""
    path = Path(path)
    file = file if file is not None else str(path)
    text = read_text(path, file)
    conflicts = conflict_problems(text, file)
    if conflicts:
        raise SpecError(conflicts)
    if not text.strip():
        raise _fail(file, 1, 1, "the file is empty", text,
                    "a spec needs at least: version, name, data and layers")
    doc = Document(file, path, text, None)
    is_json = path.suffix.lower() == ".json"
    json_data: Any = None
    if is_json:
        try:
            json_data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail(file, exc.lineno, exc.colno, f"JSON syntax error: {exc.msg}", text) from None
    try:
        # Tabs are whitespace in JSON but not in YAML indentation; one char for one keeps columns.
        node = _compose(text.replace("\t", " ") if is_json else text)
    except yaml.MarkedYAMLError as exc:
        if not is_json:
            raise _yaml_problem(exc, file, text) from None
        node = None
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML marks nearly everything
        raise _fail(file, 0, 0, f"YAML error: {exc}") from None
    if node is None and not is_json:
        raise _fail(file, 1, 1, "the file has only comments", text,
                    "a spec needs at least: version, name, data and layers")
    try:
        data = _Walker(doc).walk(node, "") if node is not None else json_data
    except yaml.MarkedYAMLError as exc:
        raise _yaml_problem(exc, file, text) from None
    doc.data = json_data if is_json else data
    if not isinstance(doc.data, dict):
        line, col = doc.locate("")
        kind = type(doc.data).__name__ if doc.data is not None else "nothing"
        words = {"list": "a list", "str": "a single text", "int": "a number", "float": "a number"}
        kind = words.get(kind, kind)
        raise SpecError([Problem(file, line, col, "", f"the top level must be a mapping of keys, not {kind}",
                                 doc.source_line(line), "start with 'version: 1' and 'name: ...'")])
    return doc


# -- schema ------------------------------------------------------------------------------------
@cache
def packaged_schema() -> dict[str, Any]:
    """The pipeline JSON Schema shipped inside the package (built-in names only)."""
    text = resources.files("dlnflow").joinpath("schema/pipeline.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


REGISTERED_ENUMS = (
    (("$defs", "model", "properties", "backend"), BACKENDS),
    (("$defs", "train", "properties", "method"), OPTIMIZERS),
    (("properties", "loss"), LOSSES),
)
"""Where the schema lists names a user may extend with ``register_backend`` and friends."""


def _extras() -> tuple[tuple[str, ...], ...]:
    return tuple(registry.extras() for _, registry in REGISTERED_ENUMS)


def schema() -> dict[str, Any]:
    """The schema, its enums extended by the backends, methods and losses registered by the user."""
    return _schema_with(_extras())


@cache
def _schema_with(extras: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    if not any(extras):
        return packaged_schema()
    out = copy.deepcopy(packaged_schema())
    for (path, _), names in zip(REGISTERED_ENUMS, extras, strict=True):
        node = out
        for part in path:
            node = node[part]
        node["enum"] = [*node["enum"], *names]
    return out


def validator() -> Draft202012Validator:
    return _validator_with(_extras())


@cache
def _validator_with(extras: tuple[tuple[str, ...], ...]) -> Draft202012Validator:
    return Draft202012Validator(_schema_with(extras))


def schema_problems(doc: Document) -> list[Problem]:
    """Every schema violation of ``doc.data``, located and worded for people, in file order."""

    errors = list(validator().iter_errors(doc.data))
    return sort_problems(problems_from_errors(doc, errors, schema()))


def load_spec(path: str | Path, file: str | None = None) -> Document:
    """Load and schema-validate a spec; raise every problem at once as :class:`SpecError`."""
    doc = load_document(path, file)
    problems = sort_problems([*doc.problems, *schema_problems(doc)])
    if problems:
        raise SpecError(problems)
    return doc
