"""Reading a user's data file into located records.

:mod:`dlnflow.data.dataset` decides what the records mean (fields, labels, splits); this module only
turns bytes into rows while remembering where each row and field came from, so every
complaint about the data can name a file, a line, a column and a JSON pointer.

Checks made here, in order: the file exists and is a file, it is not empty, no line of a
line-based file is longer than :data:`MAX_LINE_BYTES`, it is UTF-8 (a byte-order mark is
allowed), and it parses (JSON, JSON lines or CSV with a header row).

>>> text = '{"examples": [{"input": "a", "target": "b"}]}'
>>> [(r.line, r.col, r.pointer, r.fields) for r in json_records(text, "f.json", key="examples")]
[(1, 15, '/examples/0', {'input': 'a', 'target': 'b'})]
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnflow.core.errors import DataError, Problem

MAX_LINE_BYTES = 1_000_000
_WS = " \t\r\n"
_decoder = json.JSONDecoder()


@dataclass
class Record:
    """One row of data with its location; ``where`` gives each field's own (line, col)."""

    fields: dict[str, Any]
    file: str
    line: int
    col: int
    pointer: str
    where: dict[str, tuple[int, int]] = field(default_factory=dict)
    source_line: str | None = None
    header: tuple[int, str | None] | None = None  # CSV: where a missing column should be blamed

    def problem(self, message: str, key: str | None = None, hint: str | None = None) -> Problem:
        """A :class:`Problem` located at this row, or at field ``key`` when it is known."""
        line, col = self.where.get(key, (self.line, self.col)) if key else (self.line, self.col)
        pointer = f"{self.pointer}/{key}" if key else self.pointer
        return Problem(self.file, line, col, pointer, message, self.source_line, hint)

    def missing(self, message: str, hint: str | None = None) -> Problem:
        """A problem about a field the row lacks (for CSV, blamed on the header row)."""
        if self.header is not None:
            return Problem(self.file, self.header[0], 1, "", message, self.header[1], hint)
        return self.problem(message, hint=hint)


def display_name(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def file_error(path: Path, message: str, hint: str | None = None) -> DataError:
    """A :class:`DataError` about a whole file (no line to point at)."""
    name = display_name(path)
    return DataError(f"{name}: {message}", [Problem(name, 0, 0, "", message, hint=hint)])


def read_source(path: Path, line_based: bool) -> tuple[bytes, str]:
    """The file's bytes and text, after the existence, emptiness, line-length and UTF-8 checks."""
    if not path.exists():
        raise file_error(path, "data file not found", "check data.path; it is relative to the spec file")
    if path.is_dir():
        raise file_error(path, "expected a file but found a directory")
    raw = path.read_bytes()
    if not raw.strip():
        raise file_error(path, "data file is empty", "it must hold at least one example")
    if line_based:
        _check_line_lengths(path, raw)
    return raw, decode_utf8(path, raw)


def _check_line_lengths(path: Path, raw: bytes) -> None:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if len(line) > MAX_LINE_BYTES:
            name = display_name(path)
            message = (f"line {number} is {len(line) / 1e6:.1f} MB long; lines over "
                       f"{MAX_LINE_BYTES // 1_000_000} MB are refused")
            hint = "is this really a line-based data file? one example per line is expected"
            raise DataError(f"{name}:{number}: {message}", [Problem(name, number, 1, "", message, hint=hint)])


def decode_utf8(path: Path, raw: bytes) -> str:
    """Decode ``raw`` as UTF-8 (BOM allowed) or fail naming the byte offset, line and column."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        name = display_name(path)
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start:exc.start + 1].hex()
        message = f"not valid UTF-8: byte 0x{bad} at byte offset {exc.start}"
        hint = "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        raise DataError(f"{name}:{line}:{col}: {message}",
                        [Problem(name, line, col, "", message, hint=hint)]) from None


class Lines:
    """Maps character offsets in a text to 1-based (line, column).

    >>> Lines("ab\\ncd").position(4)
    (2, 2)
    """

    def __init__(self, text: str):
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, offset: int) -> tuple[int, int]:
        index = bisect.bisect_right(self.starts, offset) - 1
        return index + 1, offset - self.starts[index] + 1

    def source(self, line: int, limit: int = 240) -> str | None:
        """The text of ``line`` when it is short enough to show under a message."""
        start = self.starts[line - 1]
        end = self.starts[line] - 1 if line < len(self.starts) else len(self.text)
        return self.text[start:end] if end - start <= limit else None


def parse_json(text: str, name: str) -> Any:
    """``json.loads`` with a located :class:`DataError` on bad syntax."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg}"
        before = text[:exc.pos].rstrip(_WS)
        hint = "remove the comma before this point (JSON allows no trailing comma)" if before.endswith(",") else None
        problem = Problem(name, exc.lineno, exc.colno, "", message, Lines(text).source(exc.lineno), hint)
        raise DataError(f"{name}:{exc.lineno}:{exc.colno}: {message}", [problem]) from None


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _members(text: str, start: int) -> dict[str, tuple[int, Any]]:
    """Members of the (valid) JSON object at ``start``: key -> (value offset, value)."""
    out: dict[str, tuple[int, Any]] = {}
    i = _skip(text, start + 1)
    while text[i] != "}":
        key, i = _decoder.raw_decode(text, i)
        i = _skip(text, _skip(text, i) + 1)  # past ':'
        value_at = i
        value, i = _decoder.raw_decode(text, i)
        out[key] = (value_at, value)
        i = _skip(text, i)
        if text[i] == ",":
            i = _skip(text, i + 1)
    return out


def _items(text: str, start: int) -> list[tuple[int, Any]]:
    """Items of the (valid) JSON array at ``start``: (offset, value) each."""
    out: list[tuple[int, Any]] = []
    i = _skip(text, start + 1)
    while text[i] != "]":
        value_at = i
        value, i = _decoder.raw_decode(text, i)
        out.append((value_at, value))
        i = _skip(text, i)
        if text[i] == ",":
            i = _skip(text, i + 1)
    return out


def json_records(text: str, name: str, key: str | None = None) -> list[Record]:
    """Rows of a JSON document: a list of objects, or the list under top-level ``key``."""
    document = parse_json(text, name)
    lines = Lines(text)
    root = _skip(text, 0)
    if key is not None:
        if not isinstance(document, dict) or key not in document:
            found = ", ".join(sorted(document)) if isinstance(document, dict) else type(document).__name__
            message = f'expected a JSON object with an "{key}" list (found: {found})'
            raise DataError(f"{name}: {message}", [Problem(name, 1, root + 1, "", message)])
        root = _members(text, root)[key][0]
        document = document[key]
    prefix = f"/{key}" if key else ""
    if not isinstance(document, list):
        line, col = lines.position(root)
        message = f"expected a JSON list of examples, found {type(document).__name__}"
        raise DataError(f"{name}:{line}:{col}: {message}", [Problem(name, line, col, prefix, message)])
    records = []
    for index, (offset, value) in enumerate(_items(text, root)):
        line, col = lines.position(offset)
        fields, where = value, {}
        if isinstance(value, dict):
            where = {k: lines.position(at) for k, (at, _) in _members(text, offset).items()}
        records.append(Record(fields, name, line, col, f"{prefix}/{index}", where, lines.source(line)))
    return records


def jsonl_records(text: str, name: str) -> tuple[list[Record], list[Problem]]:
    """Rows of a JSON-lines text (blank lines skipped) and the problems of lines that do not parse."""
    records: list[Record] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        shown = line if len(line) <= 240 else None
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(name, number, exc.colno, "", f"invalid JSON line: {exc.msg}", shown))
            continue
        where: dict[str, tuple[int, int]] = {}
        if isinstance(value, dict):
            at = _skip(line, 0)
            where = {k: (number, off + 1) for k, (off, _) in _members(line, at).items()}
        records.append(Record(value, name, number, _skip(line, 0) + 1, "", where, shown))
    return records, problems


def csv_records(text: str, name: str) -> tuple[list[Record], list[Problem]]:
    """Rows of a CSV text with a header row; ragged and malformed rows become problems."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[Record] = []
    problems: list[Problem] = []
    lines = Lines(text)
    try:
        header = next(reader)
        width = len(header)
        blame = (reader.line_num, lines.source(reader.line_num))
        repeated = _repeated_column(header, reader.line_num, name, lines)
        if repeated is not None:
            return [], [repeated]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != width:
                message = f"row has {len(row)} fields but the header has {width} ({', '.join(header)})"
                problems.append(Problem(name, number, 1, "", message, lines.source(number),
                                        "quote fields that contain commas"))
                continue
            where = dict.fromkeys(header, (number, 1))
            records.append(Record(dict(zip(header, row, strict=True)), name, number, 1, "", where,
                                  lines.source(number), blame))
    except csv.Error as exc:
        problems.append(Problem(name, reader.line_num, 1, "", f"malformed CSV: {exc}", lines.source(reader.line_num)))
    return records, problems


def _repeated_column(header: list[str], number: int, name: str, lines: Lines) -> Problem | None:
    """A problem at the second use of a column name in the header row, if a name repeats."""
    seen: set[str] = set()
    for index, cell in enumerate(header):
        if cell in seen:
            source = lines.source(number)
            col = _nth_cell_column(source, index) if source is not None else 1
            return Problem(name, number, col, "", f'the header names column "{cell}" twice (columns '
                           f'{header.index(cell) + 1} and {index + 1})', source,
                           "give every column its own name; a repeated name would hide one column's values")
        seen.add(cell)
    return None


def _nth_cell_column(line: str, index: int) -> int:
    """The 1-based column where cell ``index`` of a CSV line starts (quotes respected)."""
    cell, quoted = 0, False
    for col, char in enumerate(line, start=1):
        if cell == index:
            return col
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            cell += 1
    return 1
