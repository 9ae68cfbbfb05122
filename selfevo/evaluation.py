"""Scoring a round: held-out accuracy (direct, self-refined, self-consistent) and filter quality.

Held-out evaluation scores three answers per problem against its gold:

- ``direct``: the greedy answer;
- ``refine``: the answer after self-feedback and up to ``eval.refine_max_iters`` refinements
  (SELF's inference-time self-refinement; the latest answer counts even if still judged wrong);
- ``sc``: the majority answer of ``eval.sc_samples`` sampled answers (self-consistency).

Each accuracy comes with a Wilson 95% interval. The self-filter of a round is scored the
way SELF's filtered-vs-unfiltered analysis does: the accuracy of the answers it kept against
that of every self-generated answer, plus the precision and recall of the self-judge's
"correct" against the gold.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from selfevo.parsers import (
    answers_match,
    final_answer,
    format_number,
    parse_judgement,
    parse_number,
)
from selfevo.records import CORRECT, KEPT, Record
from selfevo.scoring import wilson_interval
from selfevo.stages import LATEST, latest_response, refined_answer
from selfevo.tasks import task_named


def is_correct(record: Record, response: str | None) -> bool | None:
    """Whether ``response``'s final answer equals the record's gold (None without a gold)."""
    if record.gold is None:
        return None
    answer = final_answer(response or "", task_named(record.task).strict_answers)
    return answers_match(answer.value, parse_number(record.gold))


def accuracy(flags: list[bool]) -> dict[str, Any]:
    """``{"acc", "ci", "n"}`` for a list of right/wrong flags (acc None when empty)."""
    n, right = len(flags), sum(flags)
    low, high = wilson_interval(right, n) if n else (0.0, 1.0)
    return {"acc": right / n if n else None, "ci": [round(low, 4), round(high, 4)], "n": n}


def majority_answer(texts: Iterable[str | None], strict: bool = False) -> str | None:
    """The most common final answer among ``texts`` (ties: the earliest); None if none parse
    (with ``strict``, only strict final answers count)."""
    answers = [final_answer(t, strict).value for t in texts]
    counts = Counter(format_number(a) for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    for answer in answers:
        if answer is not None and counts[format_number(answer)] == best:
            return format_number(answer)
    return None


def vote(records: Iterable[Record], refine_answer: str | None = None) -> dict[str, str | None]:
    """Majority answer per ``prompt_id`` over its samples: their first responses, or with
    ``refine_answer`` (a :func:`selfevo.stages.refined_answer` policy) their refined answers."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.prompt_id].append(record)
    return {
        pid: majority_answer(
            (
                refined_answer(r, refine_answer) if refine_answer else r.response
                for r in sorted(rows, key=lambda r: r.sample_index)
            ),
            task_named(rows[0].task).strict_answers,
        )
        for pid, rows in groups.items()
    }


def heldout_metrics(
    refined: list[Record],
    sampled: list[Record] | None,
    with_refine: bool = True,
    refine_answer: str = LATEST,
    sc_refine: bool = False,
) -> dict[str, Any]:
    """Direct, refine (unless ``with_refine`` is off; the answer picked by ``refine_answer``,
    see :func:`selfevo.stages.refined_answer`) and (when ``sampled`` is given) sc@n accuracy,
    with judge quality. ``refine_latest`` always scores the latest refinement (SELF's way).
    With ``sc_refine`` (the sampled answers were critiqued and refined too), the metric
    ``sc_refine`` scores the vote of their refined answers."""
    direct = [bool(is_correct(r, r.response)) for r in refined]
    metrics: dict[str, Any] = {"direct": accuracy(direct), "judge": judge_quality(refined)}
    if with_refine:
        metrics["refine"] = accuracy(
            [bool(is_correct(r, refined_answer(r, refine_answer))) for r in refined]
        )
        metrics["refine_latest"] = accuracy(
            [bool(is_correct(r, latest_response(r))) for r in refined]
        )
        metrics["refined_rows"] = sum(1 for r in refined if r.refined_response is not None)
    if sampled:
        gold = {r.prompt_id: r for r in refined}

        def vote_accuracy(votes: dict[str, str | None]) -> dict[str, Any]:
            return accuracy(
                [
                    answers_match(parse_number(answer), parse_number(gold[pid].gold))
                    for pid, answer in votes.items()
                    if pid in gold
                ]
            )

        votes = vote(sampled)
        metrics["sc"] = vote_accuracy(votes)
        if sc_refine:
            metrics["sc_refine"] = vote_accuracy(vote(sampled, refine_answer=refine_answer))
        metrics["sc_samples"] = len(sampled) // max(1, len(votes))
    return metrics


def judge_quality(records: Iterable[Record]) -> dict[str, Any]:
    """How the first self-judgement agrees with the gold: precision and recall of "correct",
    ``agreement``, the share of judged answers whose verdict the gold bears out, and
    ``balanced``, the mean of the recalls of "correct" and "incorrect" (0.5 for a judge that
    says the same whatever the answer, where agreement is only the share of that class)."""
    records = list(records)
    tp = fp = fn = tn = 0
    for record in records:
        if record.judgement is None or record.gold is None:
            continue
        right = bool(is_correct(record, record.response))
        said_correct = record.judgement == CORRECT
        tp += right and said_correct
        fp += said_correct and not right
        fn += right and not said_correct
        tn += not right and not said_correct
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "agreement": (tp + tn) / judged if (judged := tp + fp + fn + tn) else None,
        "balanced": (tp / (tp + fn) + tn / (tn + fp)) / 2 if tp + fn and tn + fp else None,
        "judged": judged,
        "judged_correct": tp + fp,
        "verdict_line_agreement": verdict_line_agreement(records),
    }


def verdict_line_agreement(records: Iterable[Record]) -> float | None:
    """How often a critique's own ``Judgement:`` line says what the judgement says.

    1.0 when the verdict line decides (``recipe.judge_by: verdict_line``); with
    ``rederived_answer`` it shows how far the critic's stated verdict follows its own working.
    None when no critique has a verdict line.
    """
    agrees = [
        line == r.judgement
        for r in records
        if r.judgement is not None and (line := parse_judgement(r.feedback).judgement) is not None
    ]
    return sum(agrees) / len(agrees) if agrees else None


def filter_quality(records: list[Record]) -> dict[str, Any]:
    """How many self-generated answers a round kept, and how accurate kept vs all were.

    ``all_acc`` scores every generated row's latest answer (after self-refinement; rows a
    stage rejected count as wrong); ``kept_acc`` scores the final answers the filter kept.
    Both are None when the data have no gold answers.
    """
    with_gold = [r for r in records if r.gold is not None]
    kept = [r for r in with_gold if r.status == KEPT]
    all_flags = [bool(is_correct(r, latest_response(r))) for r in with_gold]
    kept_flags = [bool(is_correct(r, r.final_response)) for r in kept]
    return {
        "generated": len(records),
        "kept": sum(1 for r in records if r.status == KEPT),
        "all_acc": sum(all_flags) / len(all_flags) if all_flags else None,
        "kept_acc": sum(kept_flags) / len(kept_flags) if kept_flags else None,
        "first_answer_acc": (
            sum(bool(is_correct(r, r.response)) for r in with_gold) / len(with_gold)
            if with_gold
            else None
        ),
        "judge": judge_quality(records),
    }
