"""Prompt-pool readers: every format, every file type, and no row dropped silently."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfevo.cli import main
from selfevo.readers import DataError, detect_format, read_prompts


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_plain_rows(tmp_path):
    result = read_prompts(
        _jsonl(
            tmp_path / "p.jsonl",
            [{"id": "a", "prompt": "Hi"}, {"id": 7, "prompt": "Yo", "gold": "x"}],
        )
    )
    assert result.format == "plain" and not result.errors
    assert [(r.id, r.prompt, r.gold) for r in result.records] == [
        ("a", "Hi", None),
        ("7", "Yo", "x"),
    ]
    assert result.records[0].source == "plain:p.jsonl"


def test_rows_without_id_are_named_by_line_index(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, "", {"prompt": "b"}])
    assert [r.id for r in read_prompts(path).records] == ["0", "2"]


def test_chat_rows(tmp_path):
    good = {
        "id": "c",
        "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
    }
    bad_role = {"id": "d", "messages": [{"role": "robot", "content": "x"}]}
    ends_with_assistant = {
        "id": "e",
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    }
    result = read_prompts(
        _jsonl(tmp_path / "c.jsonl", [good, bad_role, ends_with_assistant, {"messages": []}])
    )
    assert result.format == "chat"
    assert [r.id for r in result.records] == ["c"]
    assert result.records[0].messages[1].content == "Hi"
    fields = [e.field for e in result.errors]
    assert fields == ["messages[0].role", "messages", "messages"]


def test_gsm8k_rows(tmp_path):
    rows = [
        {"question": "2+2?", "answer": "2+2=4\n#### 4"},
        {"question": "q", "answer": "no final"},
        {"question": "3*1000?", "answer": "#### 3,000"},
    ]
    result = read_prompts(_jsonl(tmp_path / "g.jsonl", rows))
    assert result.format == "gsm8k"
    assert [(r.id, r.gold) for r in result.records] == [("0", "4"), ("2", "3000")]
    assert result.records[0].meta["solution"].endswith("#### 4")
    assert "####" in result.errors[0].reason and result.errors[0].line == 2


def test_svamp_json_array_with_line_numbers(tmp_path):
    rows = [
        {"ID": "chal-1", "Body": "Tom has 3 apples.", "Question": "How many?", "Answer": 3.0},
        {"ID": "chal-2", "Body": "x", "Question": "y", "Answer": "three"},
        {"ID": "chal-1", "Body": "dup", "Question": "dup?", "Answer": 1},
    ]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(rows, indent=2))
    result = read_prompts(path)
    assert result.format == "svamp"
    assert (
        result.records[0].prompt == "Tom has 3 apples. How many?" and result.records[0].gold == "3"
    )
    assert [(e.field, e.line) for e in result.errors] == [("Answer", 8), ("id", 14)]
    assert "duplicate id 'chal-1'" in result.errors[1].reason


def test_json_file_that_is_not_an_array(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"prompt": "x"}')
    result = read_prompts(path)
    assert not result.records and "JSON array" in result.errors[0].reason


def test_malformed_json_array_reports_the_line(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[\n{"prompt": "a"},\n{"prompt": oops}\n]')
    result = read_prompts(path)
    assert len(result.records) == 1 and result.errors[0].line == 3


def test_self_instruct_seed_rows(tmp_path):
    rows = [
        {
            "id": "seed_task_0",
            "name": "n",
            "instruction": "Translate.",
            "instances": [{"input": "Hallo", "output": "Hello"}],
            "is_classification": False,
        },
        {
            "id": "seed_task_1",
            "instruction": "Tell a joke.",
            "instances": [{"input": "", "output": "..."}],
        },
    ]
    result = read_prompts(_jsonl(tmp_path / "seeds.jsonl", rows))
    assert result.format == "self_instruct"
    assert result.records[0].prompt == "Translate.\n\nHallo" and result.records[0].gold == "Hello"
    assert result.records[1].prompt == "Tell a joke." and result.records[1].task == "instruction"


def test_parquet_rows(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": ""}]), path
    )
    result = read_prompts(path)
    assert [r.id for r in result.records] == ["a"]
    assert (result.errors[0].location, result.errors[0].field) == ("row 2", "prompt")


def test_unreadable_parquet_is_an_error_row(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"not parquet")
    assert "Parquet" in read_prompts(path).errors[0].reason


def test_forced_format_reports_missing_fields(tmp_path):
    result = read_prompts(_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}]), fmt="gsm8k")
    assert result.errors[0].reason == "missing field 'question'"


def test_undetectable_format(tmp_path):
    result = read_prompts(_jsonl(tmp_path / "p.jsonl", [{"text": "x"}]))
    assert "cannot tell the format" in result.errors[0].reason


def test_unknown_file_type_and_missing_file(tmp_path):
    (tmp_path / "p.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown file type"):
        read_prompts(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "nope.jsonl")


def _mixed_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        b'{"id": "a", "prompt": "What is 2+2?"}',
        b'{"id": "b", "prompt": "unterminated',
        b'{"id": "c", "prompt": "   "}',
        b'{"id": "d"}',
        b'{"id": "e", "prompt": "caf\xe9 au lait"}',
        b'{"id": "a", "prompt": "again"}',
        b'{"id": "f", "prompt": 42}',
        b'["not", "an", "object"]',
        b'{"id": "g", "prompt": "Name a colour."}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_mixed_bad_file_reports_each_row(tmp_path):
    result = read_prompts(_mixed_file(tmp_path))
    assert [r.id for r in result.records] == ["a", "g"]
    by_line = {e.line: e for e in result.errors}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8]
    assert "malformed JSON" in by_line[2].reason
    assert by_line[3].reason == "empty field 'prompt'"
    assert by_line[4].reason == "missing field 'prompt'"
    assert "invalid UTF-8" in by_line[5].reason
    assert "duplicate id 'a'" in by_line[6].reason and "line 1" in by_line[6].reason
    assert "must be a string, got int" in by_line[7].reason
    assert "JSON object" in by_line[8].reason
    assert result.total == 9
    with pytest.raises(DataError, match="7 bad row"):
        result.raise_if_bad()


def test_data_check_cli_reports_lines_and_exits_1(tmp_path, capsys):
    assert main(["data", "check", str(_mixed_file(tmp_path))]) == 1
    out = capsys.readouterr().out
    for line in (2, 3, 4, 5, 6, 7, 8):
        assert f"line {line}" in out
    assert "9 rows: 2 good, 7 bad (format: plain)" in out


def test_data_check_cli_on_a_clean_file(tmp_path, capsys):
    path = _jsonl(tmp_path / "ok.jsonl", [{"id": "a", "prompt": "x"}])
    assert main(["data", "check", str(path), "--format", "plain"]) == 0
    assert "1 rows: 1 good, 0 bad" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("relative", "fmt", "count"),
    [
        ("gsm8k/test.jsonl", "gsm8k", 1319),
        ("svamp/SVAMP.json", "svamp", 1000),
        ("alpaca_seeds/seed_tasks.jsonl", "self_instruct", 175),
    ],
)
def test_shared_data_sets_read_cleanly(shared_data, relative, fmt, count):
    result = read_prompts(shared_data / relative)
    assert (result.format, len(result.records), result.errors) == (fmt, count, [])


def test_detect_format():
    assert detect_format({"messages": []}) == "chat"
    assert detect_format({"question": 1, "answer": 2}) == "gsm8k"
    assert detect_format({"Body": 1, "Question": 2}) == "svamp"
    assert detect_format({"instruction": 1}) == "self_instruct"
    assert detect_format({"prompt": 1}) == "plain"
    assert detect_format({"x": 1}) is None
