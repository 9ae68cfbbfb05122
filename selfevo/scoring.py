"""Scoring a predictions file against a math benchmark (GSM8K, SVAMP).

Works on any system's outputs: a JSONL of ``{"id", "output"}`` rows. GSM8K rows are named by
their 0-based line index unless they carry an ``id``; SVAMP rows by their ``ID``. A benchmark
row with no prediction counts as wrong and is listed under ``missing_ids``; a prediction with
no number in it counts as wrong and as ``invalid``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfevo.parsers import answers_match, extract_answer, parse_number
from selfevo.readers import RowError, iter_raw_rows, read_prompts

BENCHES = ("gsm8k", "svamp")


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Predictions:
    outputs: dict[str, str] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)


def read_predictions(path: str | Path) -> Predictions:
    """``{"id", "output"}`` rows; bad and duplicate rows are reported, never dropped silently."""
    predictions = Predictions()
    for raw in iter_raw_rows(Path(path)):
        if raw.error is not None:
            predictions.errors.append(RowError(raw.location, raw.error, line=raw.line))
            continue
        obj = raw.obj
        problem = None
        if not isinstance(obj, dict):
            problem = (None, "a row must be a JSON object")
        elif isinstance(obj.get("id"), bool) or not isinstance(obj.get("id"), (str, int)):
            problem = ("id", "field 'id' must be a string or integer")
        elif not isinstance(obj.get("output"), str):
            problem = ("output", "field 'output' must be a string")
        elif str(obj["id"]) in predictions.outputs:
            problem = ("id", f"duplicate id '{obj['id']}'")
        if problem:
            predictions.errors.append(RowError(raw.location, problem[1], problem[0], raw.line))
            continue
        predictions.outputs[str(obj["id"])] = obj["output"]
    return predictions


def score_outputs(golds: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
    """Accuracy of ``outputs`` against numeric ``golds``, both keyed by id."""
    correct = invalid = 0
    missing = []
    for rid, gold in golds.items():
        if rid not in outputs:
            missing.append(rid)
            continue
        answer = extract_answer(outputs[rid])
        if answer.value is None:
            invalid += 1
        elif answers_match(answer.value, parse_number(gold)):
            correct += 1
    n = len(golds)
    low, high = wilson_interval(correct, n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci95": [round(low, 4), round(high, 4)],
        "invalid": invalid,
        "missing": len(missing),
        "missing_ids": missing[:20],
        "unknown_ids": len(set(outputs) - set(golds)),
    }


def score_benchmark(bench: str, data: str | Path, predictions: str | Path) -> dict[str, Any]:
    """Score a predictions JSONL against a benchmark file; returns the JSON summary."""
    if bench not in BENCHES:
        raise ValueError(f"unknown bench {bench!r}; expected one of {', '.join(BENCHES)}")
    bench_rows = read_prompts(data, fmt=bench).raise_if_bad()
    preds = read_predictions(predictions)
    golds = {record.id: record.gold for record in bench_rows.records}
    summary = {"bench": bench, **score_outputs(golds, preds.outputs)}
    summary["bad_prediction_rows"] = [str(e) for e in preds.errors[:20]]
    summary["bad_prediction_row_count"] = len(preds.errors)
    return summary
