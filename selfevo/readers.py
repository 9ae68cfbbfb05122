"""Readers for prompt pools: JSONL, JSON and Parquet files in five row formats.

Formats (``--format``, or detected from the first readable row's keys):

========== ============================================ =====================================
format     row                                          prompt / gold
========== ============================================ =====================================
plain      ``{"id", "prompt", "gold"?}``                prompt / gold
chat       ``{"id"?, "messages": [{role, content}]}``   messages / ``gold``
gsm8k      ``{"question", "answer"}``                   question / number after ``####``
svamp      ``{"ID", "Body", "Question", "Answer"}``     Body + " " + Question / Answer
self_instruct ``{"id", "instruction", "instances"}``    instruction (+ input) / first output
========== ============================================ =====================================

A row without an id gets its 0-based index (the line index in JSONL), which is how GSM8K
rows are named. A reader never drops a row silently: every row is a record or a
:class:`RowError` naming its line, the field and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfevo.parsers import format_number
from selfevo.records import Message, Record

FORMATS = ("plain", "chat", "gsm8k", "svamp", "self_instruct")
CHAT_ROLES = ("system", "user", "assistant")


@dataclass
class RowError:
    """Why one row (or the rest of a file) could not be read."""

    location: str
    reason: str
    field: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f" [field '{self.field}']" if self.field else ""
        return f"{self.location}{where}: {self.reason}"


@dataclass
class ReadResult:
    path: str
    format: str | None
    records: list[Record] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.records) + len(self.errors)

    def raise_if_bad(self) -> ReadResult:
        if self.errors:
            raise DataError(self)
        return self


class DataError(ValueError):
    """A prompt file with unreadable rows; the message lists them (the first 20)."""

    def __init__(self, result: ReadResult):
        self.result = result
        shown = "\n  ".join(str(e) for e in result.errors[:20])
        more = len(result.errors) - 20
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{result.path}: {len(result.errors)} bad row(s) of {result.total}"
            f" (run `selfevo data check {result.path}`):\n  {shown}{tail}"
        )


class _RowProblem(Exception):
    def __init__(self, field_name: str | None, reason: str):
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


@dataclass
class RawRow:
    """One row as read off the file: a decoded JSON value, or why it could not be decoded."""

    index: int
    location: str
    line: int | None
    obj: Any = None
    error: str | None = None


# --- raw rows out of each file type ------------------------------------------------------


def _jsonl_rows(data: bytes) -> Iterator[RawRow]:
    for index, raw in enumerate(data.split(b"\n")):
        if not raw.strip():
            continue
        row = RawRow(index=index, location=f"line {index + 1}", line=index + 1)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            row.error = f"invalid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            yield row
            continue
        try:
            row.obj = json.loads(text)
        except json.JSONDecodeError as exc:
            row.error = f"malformed JSON: {exc.msg} (column {exc.colno})"
        yield row


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _json_rows(data: bytes) -> Iterator[RawRow]:
    """Elements of a top-level JSON array, each with the line it starts on."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        yield RawRow(0, f"line {line}", line, error="invalid UTF-8; the file was not read")
        return
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        yield RawRow(0, "line 1", 1, error="a .json prompt file must hold a JSON array of rows")
        return
    pos, line, counted_to, index = _skip_ws(text, pos + 1), 1, 0, 0
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        row = RawRow(index, f"item {index} (line {line})", line)
        try:
            row.obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            row.location = f"line {exc.lineno}"
            row.line = exc.lineno
            row.error = (
                f"malformed JSON: {exc.msg} (column {exc.colno}); rows after it were not read"
            )
            yield row
            return
        yield row
        index += 1
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos >= len(text) or text[pos] != "]":
            line += text.count("\n", counted_to, pos)
            yield RawRow(index, f"line {line}", line, error="malformed JSON: expected ',' or ']'")
            return


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # ArrowInvalid, OSError: report, never crash
        yield RawRow(0, "file", None, error=f"not a readable Parquet file: {exc}")
        return
    for index, obj in enumerate(rows):
        yield RawRow(index, f"row {index + 1}", None, obj=obj)


def iter_raw_rows(path: Path) -> Iterator[RawRow]:
    """Every row of a .jsonl, .json (array) or .parquet file, bad ones included."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path.read_bytes())
    elif suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path.read_bytes())
    else:
        raise ValueError(f"{path}: unknown file type '{suffix}' (use .jsonl, .json or .parquet)")


# --- row formats -------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(obj: dict, key: str, required: bool = True) -> str | None:
    if key not in obj or (obj[key] is None and not required):
        if required:
            raise _RowProblem(key, f"missing field '{key}'")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise _RowProblem(key, f"field '{key}' must be a string, got {_type_name(value)}")
    if required and not value.strip():
        raise _RowProblem(key, f"empty field '{key}'")
    return value


def _row_id(obj: dict, index: int, key: str = "id") -> str:
    if key not in obj or obj[key] is None:
        return str(index)
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _RowProblem(
            key, f"field '{key}' must be a string or integer, got {_type_name(value)}"
        )
    if isinstance(value, str) and not value.strip():
        raise _RowProblem(key, f"empty field '{key}'")
    return str(value)


def _plain(obj: dict, index: int) -> Record:
    rid = _row_id(obj, index)
    return Record(
        id=rid, prompt_id=rid, prompt=_text(obj, "prompt"), gold=_text(obj, "gold", False)
    )


def _chat(obj: dict, index: int) -> Record:
    messages = obj.get("messages")
    if messages is None:
        raise _RowProblem("messages", "missing field 'messages'")
    if not isinstance(messages, list) or not messages:
        raise _RowProblem("messages", "field 'messages' must be a non-empty list")
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _RowProblem(f"messages[{i}]", "each message must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise _RowProblem(
                f"messages[{i}].role", f"role must be one of {CHAT_ROLES}, got {role!r}"
            )
        if not isinstance(content, str) or not content.strip():
            raise _RowProblem(f"messages[{i}].content", "content must be a non-empty string")
        parsed.append(Message(role=role, content=content))
    if parsed[-1].role != "user":
        raise _RowProblem("messages", "the last message of a prompt must be from 'user'")
    rid = _row_id(obj, index)
    return Record(id=rid, prompt_id=rid, messages=parsed, gold=_text(obj, "gold", False))


def _gsm8k(obj: dict, index: int) -> Record:
    question, answer = _text(obj, "question"), _text(obj, "answer")
    if "####" not in answer:
        raise _RowProblem("answer", "field 'answer' has no '#### N' final answer")
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    rid = _row_id(obj, index)
    return Record(id=rid, prompt_id=rid, prompt=question, gold=gold, meta={"solution": answer})


def _svamp(obj: dict, index: int) -> Record:
    body, question = _text(obj, "Body"), _text(obj, "Question")
    answer = obj.get("Answer")
    if answer is None:
        raise _RowProblem("Answer", "missing field 'Answer'")
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise _RowProblem("Answer", f"field 'Answer' must be a number, got {_type_name(answer)}")
    rid = _row_id(obj, index, key="ID")
    meta = {"equation": str(obj.get("Equation", "")), "type": str(obj.get("Type", ""))}
    prompt = f"{body.strip()} {question.strip()}"
    return Record(id=rid, prompt_id=rid, prompt=prompt, gold=format_number(answer), meta=meta)


def _self_instruct(obj: dict, index: int) -> Record:
    instruction = _text(obj, "instruction")
    instances = obj.get("instances") or [{}]
    if not isinstance(instances, list) or not isinstance(instances[0], dict):
        raise _RowProblem("instances", "field 'instances' must be a list of objects")
    task_input = _text(instances[0], "input", required=False) or ""
    output = _text(instances[0], "output", required=False)
    prompt = f"{instruction.strip()}\n\n{task_input.strip()}" if task_input.strip() else instruction
    meta = {
        "name": str(obj.get("name", "")),
        "is_classification": str(obj.get("is_classification", False)),
    }
    rid = _row_id(obj, index)
    return Record(id=rid, prompt_id=rid, prompt=prompt, gold=output, task="instruction", meta=meta)


_CONVERTERS: dict[str, Callable[[dict, int], Record]] = {
    "plain": _plain,
    "chat": _chat,
    "gsm8k": _gsm8k,
    "svamp": _svamp,
    "self_instruct": _self_instruct,
}


def detect_format(obj: dict) -> str | None:
    """The row format a JSON object looks like, from its keys."""
    keys = set(obj)
    if "messages" in keys:
        return "chat"
    if {"question", "answer"} <= keys:
        return "gsm8k"
    if {"Body", "Question"} <= keys:
        return "svamp"
    if "instruction" in keys:
        return "self_instruct"
    if "prompt" in keys:
        return "plain"
    return None


def read_prompts(path: str | Path, fmt: str = "auto", task: str | None = None) -> ReadResult:
    """Read a prompt pool file into records, collecting a :class:`RowError` per bad row.

    Args:
        path: a ``.jsonl``, ``.json`` (array) or ``.parquet`` file.
        fmt: one of :data:`FORMATS`, or ``auto`` to detect it from the first readable row.
        task: stamped on every record (``math``, ``instruction``), unless the format sets one.

    Returns:
        Records and errors; call :meth:`ReadResult.raise_if_bad` to fail on any bad row.
    """
    path = Path(path)
    if fmt != "auto" and fmt not in _CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    result = ReadResult(path=str(path), format=None if fmt == "auto" else fmt)
    first_seen: dict[str, str] = {}
    for raw in iter_raw_rows(path):
        if raw.error is not None:
            result.errors.append(RowError(raw.location, raw.error, line=raw.line))
            continue
        if not isinstance(raw.obj, dict):
            reason = f"a row must be a JSON object, got {_type_name(raw.obj)}"
            result.errors.append(RowError(raw.location, reason, line=raw.line))
            continue
        if result.format is None:
            result.format = detect_format(raw.obj)
            if result.format is None:
                reason = f"cannot tell the format from keys {sorted(raw.obj)}; pass a format"
                result.errors.append(RowError(raw.location, reason, line=raw.line))
                continue
        try:
            record = _CONVERTERS[result.format](raw.obj, raw.index)
        except _RowProblem as problem:
            result.errors.append(RowError(raw.location, problem.reason, problem.field, raw.line))
            continue
        if record.id in first_seen:
            reason = f"duplicate id '{record.id}' (first seen at {first_seen[record.id]})"
            result.errors.append(RowError(raw.location, reason, "id", raw.line))
            continue
        first_seen[record.id] = raw.location
        record.source = f"{result.format}:{path.name}"
        record.task = record.task or task
        result.records.append(record)
    return result
