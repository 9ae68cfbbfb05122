"""The record contract: one row type that every stage reads and writes.

A :class:`Record` is one (prompt, sample) pair travelling through a round: generation fills
``response``, self-feedback fills ``feedback``/``judgement``, self-refinement fills
``refined_response`` and the re-judge fills ``refined_feedback``/``refined_judgement``; the
filter sets ``status`` to ``kept`` (with ``final_response``) or ``rejected`` (with a
``reject_reason``). Nothing is dropped: a stage that cannot use a row rejects it with a reason.

The same contract is an Arrow schema (:data:`RECORD_SCHEMA`), which is what Ray Data batches
and the Parquet files under a run directory hold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PENDING = "pending"
KEPT = "kept"
REJECTED = "rejected"
STATUSES = (PENDING, KEPT, REJECTED)

CORRECT = "correct"
INCORRECT = "incorrect"


class Reject:
    """Reject reasons: a stable code, optionally followed by ``: detail``."""

    EMPTY_RESPONSE = "empty_response"
    TRUNCATED = "truncated"
    NO_JUDGEMENT = "no_judgement"
    JUDGED_INCORRECT = "judged_incorrect"
    NO_SCORE = "no_score"
    LOW_SCORE = "low_score"
    DUPLICATE = "duplicate"
    RULE = "rule"
    ENGINE_ERROR = "engine_error"
    LABELER_ERROR = "labeler_error"
    NO_INSTRUCTION = "no_instruction"
    NOT_A_MISTAKE = "not_a_mistake"
    ANALYSIS_DISAGREES = "analysis_disagrees"

    @staticmethod
    def with_detail(code: str, detail: str | None) -> str:
        return f"{code}: {detail}" if detail else code


@dataclass
class Message:
    role: str
    content: str


@dataclass
class Record:
    """One prompt sample and everything the stages of a round learned about it."""

    id: str
    prompt_id: str
    prompt: str | None = None
    messages: list[Message] | None = None
    sample_index: int = 0
    round: int = 0
    task: str | None = None
    source: str | None = None
    gold: str | None = None
    response: str | None = None
    feedback: str | None = None
    judgement: str | None = None
    refined_response: str | None = None
    refined_feedback: str | None = None
    refined_judgement: str | None = None
    final_response: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    status: str = PENDING
    reject_reason: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"record {self.id!r}: exactly one of prompt and messages must be set")
        if self.status not in STATUSES:
            raise ValueError(f"record {self.id!r}: status {self.status!r} not in {STATUSES}")
        if self.messages is not None:
            self.messages = [m if isinstance(m, Message) else Message(**m) for m in self.messages]

    def question_text(self) -> str:
        """The prompt as plain text: the text itself, or the last user message."""
        if self.prompt is not None:
            return self.prompt
        users = [m.content for m in self.messages or [] if m.role == "user"]
        return users[-1] if users else ""

    def reject(self, code: str, detail: str | None = None) -> Record:
        self.status = REJECTED
        self.reject_reason = Reject.with_detail(code, detail)
        return self

    def keep(self, final_response: str) -> Record:
        self.status = KEPT
        self.final_response = final_response
        self.reject_reason = None
        return self

    def to_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["scores"] = list(self.scores.items())
        row["meta"] = list(self.meta.items())
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Record:
        row = dict(row)
        row["scores"] = dict(row.get("scores") or [])
        row["meta"] = dict(row.get("meta") or [])
        if row.get("messages") is not None:
            row["messages"] = [Message(**m) for m in row["messages"]]
        return cls(**row)


_MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
_TYPES = {
    "sample_index": pa.int32(),
    "round": pa.int32(),
    "messages": pa.list_(_MESSAGE_TYPE),
    "scores": pa.map_(pa.string(), pa.float64()),
    "meta": pa.map_(pa.string(), pa.string()),
}
_REQUIRED = {"id", "prompt_id", "sample_index", "round", "scores", "status", "meta"}

RECORD_SCHEMA = pa.schema(
    [
        pa.field(f.name, _TYPES.get(f.name, pa.string()), nullable=f.name not in _REQUIRED)
        for f in dataclasses.fields(Record)
    ]
)


def records_to_table(records: list[Record]) -> pa.Table:
    """Records as an Arrow table with :data:`RECORD_SCHEMA`."""
    return pa.Table.from_pylist([r.to_row() for r in records], schema=RECORD_SCHEMA)


def table_to_records(table: pa.Table) -> list[Record]:
    """The inverse of :func:`records_to_table`; extra columns are an error."""
    unknown = set(table.column_names) - set(RECORD_SCHEMA.names)
    if unknown:
        raise ValueError(f"table has columns outside the record schema: {sorted(unknown)}")
    return [Record.from_row(row) for row in table.to_pylist()]


def read_records(path: str | Path) -> list[Record]:
    """Records from a Parquet file written by :func:`write_records` (or a pipeline)."""
    return table_to_records(pq.read_table(path))


def write_records(records: list[Record], path: str | Path) -> Path:
    """Records to a Parquet file (parent folders made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(records_to_table(records), path)
    return path


def status_counts(records: list[Record]) -> dict[str, int]:
    """How many records are in each status, and per reject code."""
    counts: dict[str, int] = {s: 0 for s in STATUSES}
    for record in records:
        counts[record.status] += 1
        if record.status == REJECTED and record.reject_reason:
            code = "rejected:" + record.reject_reason.split(":", 1)[0]
            counts[code] = counts.get(code, 0) + 1
    return counts
