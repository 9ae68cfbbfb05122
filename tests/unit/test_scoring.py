"""Benchmark scoring: gold solutions score 1.0, shifted predictions score near chance."""

from __future__ import annotations

import json

import pytest

from selfevo.cli import main
from selfevo.parsers import format_number
from selfevo.scoring import read_predictions, score_benchmark, score_outputs, wilson_interval


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_gold_scores_one_and_shifted_scores_near_zero(shared_data, tmp_path, capsys):
    test_file = shared_data / "gsm8k" / "test.jsonl"
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    gold = _write_jsonl(
        tmp_path / "gold.jsonl", [{"id": i, "output": r["answer"]} for i, r in enumerate(rows)]
    )
    assert (
        main(["score", "--bench", "gsm8k", "--data", str(test_file), "--predictions", str(gold)])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (summary["n"], summary["correct"], summary["accuracy"]) == (1319, 1319, 1.0)
    shifted = [{"id": i + 1, "output": r["answer"]} for i, r in enumerate(rows[:-1])]
    summary = score_benchmark("gsm8k", test_file, _write_jsonl(tmp_path / "s.jsonl", shifted))
    assert summary["accuracy"] < 0.05
    assert summary["missing_ids"] == ["0"]


def test_svamp_answer_is_sentences(shared_data, tmp_path):
    data = shared_data / "svamp" / "SVAMP.json"
    problems = json.loads(data.read_text())
    outputs = [
        {
            "id": p["ID"],
            "output": f"{p['Equation']} gives it. The answer is {format_number(p['Answer'])}.",
        }
        for p in problems
    ]
    summary = score_benchmark("svamp", data, _write_jsonl(tmp_path / "p.jsonl", outputs))
    assert (summary["n"], summary["accuracy"]) == (1000, 1.0)
    shifted = [
        {"id": a["ID"], "output": f"The answer is {format_number(b['Answer'])}."}
        for a, b in zip(problems[1:], problems[:-1], strict=True)
    ]
    assert (
        score_benchmark("svamp", data, _write_jsonl(tmp_path / "s.jsonl", shifted))["accuracy"]
        < 0.05
    )


def test_missing_invalid_and_unknown_are_counted():
    summary = score_outputs(
        {"0": "3", "1": "4", "2": "5"}, {"0": "#### 3", "1": "no idea", "9": "#### 1"}
    )
    assert summary["correct"] == 1 and summary["invalid"] == 1
    assert summary["missing_ids"] == ["2"] and summary["unknown_ids"] == 1
    assert summary["accuracy"] == pytest.approx(1 / 3)


def test_bad_prediction_rows_are_reported(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 0, "output": "1"}\n{oops\n{"id": 0, "output": "2"}\n{"id": 1}\n')
    predictions = read_predictions(path)
    assert predictions.outputs == {"0": "1"}
    assert [(e.line, e.field) for e in predictions.errors] == [(2, None), (3, "id"), (4, "output")]


def test_wilson_interval_known_values():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)
