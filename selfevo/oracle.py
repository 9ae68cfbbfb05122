"""The oracle labeler for verifiable tasks: feedback, judgement and refinement from the gold.

SELF's meta-skill corpus is written by a stronger labeler (GPT-4 in the paper). For tasks with
a gold answer a rule can do it. A registered task may write its own critique (the demo
world's is a worked solution, :mod:`selfevo.tasks`); any other record with a gold answer gets
an answer-level check ("the final answer N is right / should be M") and, as its refinement,
the gold solution when the data has one (GSM8K does), else ``The answer is M.`` A record
without a gold answer is rejected with ``labeler_error``: an oracle cannot judge it.
"""

from __future__ import annotations

from selfevo.parsers import answers_match, extract_answer, format_number, parse_number
from selfevo.records import CORRECT, INCORRECT, Record, Reject
from selfevo.tasks import task_named


def _answer_check(record: Record, response: str) -> tuple[str, str]:
    gold = parse_number(record.gold)
    predicted = extract_answer(response).value
    if predicted is None:
        return INCORRECT, "The response gives no final number.\nJudgement: incorrect"
    shown = format_number(predicted)
    if answers_match(predicted, gold):
        return CORRECT, f"The final answer {shown} is right.\nJudgement: correct"
    return (
        INCORRECT,
        f"The final answer {shown} is wrong; it should be {record.gold}.\nJudgement: incorrect",
    )


def gold_solution(record: Record) -> str | None:
    """The reference solution text of a record: its data's own, else a bare answer line."""
    if "solution" in record.meta:
        return record.meta["solution"]
    return f"The answer is {record.gold}." if record.gold is not None else None


def oracle_label(record: Record) -> Record:
    """Fill ``feedback``/``judgement`` (and ``refined_response`` when incorrect) in place."""
    if record.gold is None:
        return record.reject(Reject.LABELER_ERROR, "the oracle needs a gold answer")
    response = record.response or ""
    critique = task_named(record.task).oracle_critique(record, response)
    record.judgement, record.feedback = critique or _answer_check(record, response)
    if record.judgement == INCORRECT:
        record.refined_response = gold_solution(record)
    return record.keep(record.refined_response or response)
