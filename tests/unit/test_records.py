"""The record contract: dataclass <-> Arrow <-> Parquet without loss."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from selfevo.records import (
    KEPT,
    RECORD_SCHEMA,
    REJECTED,
    Message,
    Record,
    Reject,
    records_to_table,
    status_counts,
    table_to_records,
)


def _records() -> list[Record]:
    text = Record(id="a/0", prompt_id="a", prompt="1+1?", gold="2", round=1, task="math")
    text.response, text.feedback, text.judgement = "2", "ok\nJudgement: correct", "correct"
    text.scores = {"quality": 8.0, "following": 9.5}
    text.meta = {"solution": "#### 2"}
    text.keep("2")
    chat = Record(
        id="b/1",
        prompt_id="b",
        sample_index=1,
        messages=[Message("system", "Be brief."), {"role": "user", "content": "Hi"}],
    )
    chat.reject(Reject.NO_JUDGEMENT, "empty feedback")
    return [text, chat, Record(id="c/0", prompt_id="c", prompt="pending")]


def test_arrow_round_trip(tmp_path):
    records = _records()
    table = records_to_table(records)
    assert table.schema == RECORD_SCHEMA
    path = tmp_path / "round.parquet"
    pq.write_table(table, path)
    assert table_to_records(pq.read_table(path)) == records


def test_chat_messages_become_message_objects():
    chat = _records()[1]
    assert all(isinstance(m, Message) for m in chat.messages)
    assert chat.question_text() == "Hi"


def test_exactly_one_of_prompt_and_messages():
    with pytest.raises(ValueError, match="exactly one"):
        Record(id="x", prompt_id="x")
    with pytest.raises(ValueError, match="exactly one"):
        Record(id="x", prompt_id="x", prompt="p", messages=[Message("user", "q")])


def test_status_is_checked():
    with pytest.raises(ValueError, match="status"):
        Record(id="x", prompt_id="x", prompt="p", status="lost")


def test_keep_and_reject_set_reason():
    record = _records()[1]
    assert record.status == REJECTED and record.reject_reason == "no_judgement: empty feedback"
    record.keep("fine")
    assert record.status == KEPT and record.reject_reason is None


def test_status_counts_by_reject_code():
    counts = status_counts(_records())
    assert counts == {"pending": 1, "kept": 1, "rejected": 1, "rejected:no_judgement": 1}


def test_table_with_foreign_columns_is_refused():
    table = records_to_table(_records()).append_column("extra", [[1, 2, 3]])
    with pytest.raises(ValueError, match="extra"):
        table_to_records(table)
