"""Reading and parsing untrusted files within fixed bounds.

Specs, lock files and data files come from users and from pull requests, so reading one must
end quickly and in bounded memory whatever it holds:

- :func:`read_regular` reads only regular files (a FIFO, a device such as ``/dev/zero``, a
  socket or a symbolic-link loop is named as such) and at most ``limit`` bytes;
- :func:`compose_yaml` parses YAML with nesting capped (:data:`MAX_DEPTH`) and aliases
  counted: a document whose aliases would expand to more than :data:`MAX_NODES` values (a
  "billion laughs" bomb) or that refers to itself is refused before anything walks it;
- :func:`load_yaml` builds plain data from such a document, refusing duplicate keys;
- :func:`check_json_depth` refuses JSON nested deeper than :data:`MAX_DEPTH` before
  :func:`json.loads` recurses into it;
- :func:`lone_surrogate` finds text that cannot be written as UTF-8 (a lone ``\\udXXX``).

Problems are raised as :class:`BoundsError` (an :class:`~dlnflow.errors.InputError`, exit 2)
carrying a line and column where known; callers re-raise them as their own located errors.

>>> load_yaml("a: &x [1, 2]\\nb: *x\\n")
{'a': [1, 2], 'b': [1, 2]}
>>> load_yaml("a: &x [*x]\\n")
Traceback (most recent call last):
...
dlnflow.core.bounded.BoundsError: 1:4: the alias *x refers to the value that contains it (a recursive alias)
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from dlnflow.core.errors import InputError

MAX_DEPTH = 64
"""Deepest nesting of lists and mappings accepted in a spec, lock or data file."""
MAX_NODES = 100_000
"""Most values a YAML document may hold once its aliases are expanded."""
SPEC_BYTES = 4 * 2**20
"""Largest spec or lock file read."""
DATA_BYTES = 512 * 2**20
"""Largest data file read."""

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class BoundsError(InputError):
    """A file or document outside the bounds; ``line``/``col`` are 1-based (0: the whole file)."""

    def __init__(self, reason: str, line: int = 0, col: int = 0, hint: str | None = None):
        self.reason, self.line, self.col, self.hint = reason, line, col, hint
        super().__init__(f"{line}:{col}: {reason}" if line else reason)


# -- files ---------------------------------------------------------------------------------------
def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise BoundsError("a symbolic link to a file that does not exist",
                              hint=f"it points to {os.readlink(path)}") from None
        raise BoundsError("file not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BoundsError("a loop of symbolic links (it never reaches a file)",
                              hint="point the link at a real file") from None
        raise BoundsError(f"cannot read the file: {exc.strerror or exc}") from None


def file_kind(info: os.stat_result) -> str | None:
    """What a non-regular file is, in words (``None`` for a regular file or a folder)."""
    return _KINDS.get(stat.S_IFMT(info.st_mode))


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at ``path``, refusing anything else and anything over ``limit``.

    >>> read_regular("/dev/zero", 10)
    Traceback (most recent call last):
    ...
    dlnflow.core.bounded.BoundsError: this is a character device, not a regular file
    """
    path = Path(path)
    info = _stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise BoundsError("this is a folder, not a file")
    kind = file_kind(info)
    if kind is not None:
        raise BoundsError(f"this is {kind}, not a regular file", hint="give the path of a file saved on disk")
    if info.st_size > limit:
        raise _too_big(info.st_size, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BoundsError(f"cannot read the file: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped since the check above
            raise BoundsError("this is not a regular file")
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise BoundsError(f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise _too_big(len(data), limit)
    return data


def _too_big(size: int, limit: int) -> BoundsError:
    return BoundsError(f"the file is {_size(size)}; files over {_size(limit)} are refused",
                       hint="is this the right file?")


def _size(n: int) -> str:
    """``n`` bytes in words.

    >>> _size(3 * 2**20), _size(512)
    ('3.0 MB', '512 bytes')
    """
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n} bytes"


# -- YAML ----------------------------------------------------------------------------------------
class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the nesting of composed nodes capped."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:  # type: ignore[override]
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise BoundsError(f"nested more than {MAX_DEPTH} levels deep", mark.line + 1, mark.column + 1,
                                  "flatten the document; no spec, lock or data file needs this depth")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self.depth -= 1


def compose_yaml(text: str) -> yaml.Node | None:
    """The single YAML document in ``text`` as a node graph, checked by :func:`check_nodes`.

    Raises :class:`yaml.YAMLError` for bad syntax and :class:`BoundsError` for a document
    outside the bounds.
    """
    node = _compose_with_anchors(text)
    if node is not None:
        check_nodes(node)
    return node


def check_nodes(root: yaml.Node, max_nodes: int = MAX_NODES) -> int:
    """How many values ``root`` holds with its aliases expanded; refuses cycles and more than ``max_nodes``."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_:
            mark = node.start_mark
            raise BoundsError(f"the alias *{_anchor_name(node)} refers to the value that contains it "
                              "(a recursive alias)", mark.line + 1, mark.column + 1)
        total = 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            open_.add(id(node))
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            for child in children:
                total += size(child)
                if total > max_nodes:
                    mark = node.start_mark
                    raise BoundsError(f"this value expands to more than {max_nodes} values (aliases repeat "
                                      "what they refer to)", mark.line + 1, mark.column + 1,
                                      "write the values out, or use fewer aliases")
            open_.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root)


def _anchor_name(node: yaml.Node) -> str:
    """The anchor a node was defined with (PyYAML keeps no name on nodes; ``...`` when unknown)."""
    return getattr(node, "anchor", None) or "..."


class _AnchorKeeper(_BoundedLoader):
    """Records the anchor name on each anchored node, so messages can name it."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:  # type: ignore[override]
        event = self.peek_event()
        node = super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not isinstance(event, yaml.AliasEvent):
            node.anchor = anchor  # type: ignore[attr-defined]
        return node


def _compose_with_anchors(text: str) -> yaml.Node | None:
    loader = _AnchorKeeper(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def load_yaml(text: str, unique_keys: bool = True) -> Any:
    """Plain data from one YAML document, within the bounds; duplicate keys refused when ``unique_keys``."""
    node = _compose_with_anchors(text)
    if node is None:
        return None
    check_nodes(node)
    return _construct(node, unique_keys)


def _construct(node: yaml.Node, unique_keys: bool) -> Any:
    constructor = yaml.constructor.SafeConstructor()
    if unique_keys:
        _check_unique(node, set())
    return constructor.construct_document(node)


def _check_unique(node: yaml.Node, seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _check_unique(child, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in first:
                    was = first[key.value].start_mark
                    raise BoundsError(f"duplicate key {key.value!r} (first defined at line {was.line + 1}, "
                                      f"col {was.column + 1})", key.start_mark.line + 1, key.start_mark.column + 1,
                                      "a later value silently replaces the earlier one; keep only one")
                first[key.value] = key
            _check_unique(value, seen)


# -- JSON ----------------------------------------------------------------------------------------
def check_json_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse JSON text nested deeper than ``max_depth`` (strings are skipped), before parsing it.

    >>> check_json_depth("[" * 3 + "]" * 3, max_depth=3)
    >>> check_json_depth('["[[[[", [[[1]]]]', max_depth=3)
    Traceback (most recent call last):
    ...
    dlnflow.core.bounded.BoundsError: 1:12: nested more than 3 levels deep
    """
    depth = 0
    in_string = escaped = False
    line, line_start = 1, 0
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise BoundsError(f"nested more than {max_depth} levels deep", line, i - line_start + 1,
                                  "flatten the document; no spec, lock or data file needs this depth")
        elif char in "]}":
            depth -= 1
        if char == "\n":
            line, line_start = line + 1, i + 1


# -- text ----------------------------------------------------------------------------------------
def lone_surrogate(value: Any, pointer: str = "") -> tuple[str, str] | None:
    """``(pointer, text)`` of the first string in ``value`` that is not valid Unicode text.

    JSON may spell half of a surrogate pair (``"\\ud800"``); such text cannot be written as
    UTF-8, so it can be neither hashed nor sent to a model.

    >>> lone_surrogate({"a": ["ok", "bad \\ud800"]})
    ('/a/1', 'bad \\\\ud800')
    """
    stack: list[tuple[str, Any]] = [(pointer, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return where, item.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        elif isinstance(item, dict):
            for key in reversed(list(item)):
                if isinstance(key, str) and not _encodable(key):
                    return where, key.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
                stack.append((f"{where}/{key}", item[key]))
        elif isinstance(item, list):
            stack.extend((f"{where}/{i}", v) for i, v in reversed(list(enumerate(item))))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
