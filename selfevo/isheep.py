"""I-SHEEP's round logic, the pure part: synthesis prompts, accepted instructions, the score
filter, and the demo world's warm-up corpus.

A round (Liang et al., "I-SHEEP: Self-Alignment of LLM from Scratch through an Iterative
Self-Enhancement Paradigm") runs: synthesize (the model continues few-shot prompts of seed
tasks and instructions it wrote before) -> rule filters and ROUGE-L dedup
(:mod:`selfevo.instructions`) -> held-out screen (a written problem that poses an evaluation
problem, by the task's ``problem_key``, is dropped; a near-duplicate of it was already
dropped as one) -> answer -> self-assess (1-10 for quality and for instruction
following) -> keep pairs at or above both thresholds -> fine-tune. Every synthesis prompt,
every candidate instruction and every answered pair ends kept or rejected with a reason.

Departures: I-SHEEP generates (instruction, input) pairs with a separate input step; here an
instruction line carries its own input. The demo world's tiny model cannot follow a few-shot
prompt or write a score out of the box, so ``recipe.skills_warmup`` first fine-tunes it on
oracle-written examples of both forms (:func:`warmup_examples`); the paper needs no warm-up.
A task may give synthesis a form of its own (``Task.synthesis_target`` and
``Task.synthesized_tasks``; a demo world's model works a problem out before stating it),
where Self-Instruct writes the instruction alone.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from selfevo.evaluation import is_correct
from selfevo.instructions import (
    Candidate,
    Decision,
    few_shot_prompt,
    filter_candidates,
    parse_generated_tasks,
)
from selfevo.records import PENDING, Message, Record, Reject
from selfevo.stages import assess_prompt
from selfevo.task_api import WrittenTask
from selfevo.tasks import task_named
from selfevo.training import TrainExample, own_answer_replay

QUALITY, FOLLOWING = "quality", "following"


def synthesis_rows(
    seeds: Sequence[str],
    generated: Sequence[str],
    count: int,
    round_index: int,
    *,
    seed: int,
    shots: int,
    from_generated: int,
    task: str | None,
    template_set: str = "default",
) -> list[Record]:
    """``count`` few-shot prompts for round ``round_index`` (deterministic in ``seed``)."""
    rng = random.Random(f"synthesis:{seed}:{round_index}")
    rows = []
    for k in range(count):
        text = few_shot_prompt(seeds, generated, rng, shots, from_generated, task, template_set)
        row_id = f"round{round_index}-synth{k}"
        rows.append(
            Record(
                id=row_id,
                prompt_id=row_id,
                messages=[Message("user", text)],
                round=round_index,
                task=task,
                source="synthesis",
            )
        )
    return rows


@dataclass(frozen=True)
class SynthesisResult:
    rows: list[Record]  # the synthesis prompts, each kept (>= 1 instruction) or rejected
    decisions: list[Decision]  # one per candidate instruction
    prompts: list[Record]  # the accepted instructions, as prompts to answer


def _usable_continuation(row: Record) -> str | None:
    """The text to parse tasks from: the whole continuation, or, when it ran into the token
    limit, every line but the last (which may be cut); None when nothing is usable."""
    if row.status == PENDING:
        return row.response or ""
    if (row.reject_reason or "").startswith(Reject.TRUNCATED) and "\n" in (row.response or ""):
        return (row.response or "").rsplit("\n", 1)[0]
    return None


HELD_OUT_REASON = "held_out: the same problem as an evaluation problem"


def accept_synthesized(
    rows: list[Record],
    known: list[tuple[str, str]],
    *,
    threshold: float,
    min_words: int,
    max_words: int,
    make_prompt: Callable[[str, str], Record],
    parse: Callable[[str | None], list[WrittenTask] | None] | None = None,
    held_out: Callable[[Record], bool] | None = None,
) -> SynthesisResult:
    """Parse each row's continuation into candidates (``parse``: the task's synthesis form,
    None for a continuation not in it; Self-Instruct's numbered list otherwise), filter them
    (a flaw the task's form found, rules, then ROUGE-L against ``known`` and each other, then
    ``held_out``: a prompt that poses an evaluation problem is dropped) and turn the accepted
    ones into prompts."""
    candidates: list[Candidate] = []
    for row in rows:
        text = _usable_continuation(row)
        if text is not None:
            row.status, row.reject_reason = PENDING, None
            tasks = parse(text) if parse is not None else None
            if tasks is None:
                tasks = [WrittenTask(task) for task in parse_generated_tasks(text)]
            candidates += [
                Candidate(f"{row.id}.{j}", task.text, flaw=task.flaw)
                for j, task in enumerate(tasks)
            ]
    decisions = filter_candidates(candidates, known, threshold, min_words, max_words)
    prompts = {d.id: make_prompt(d.id, d.instruction) for d in decisions if d.accepted}
    if held_out is not None:
        screened = {i for i, prompt in prompts.items() if held_out(prompt)}
        decisions = [
            replace(d, accepted=False, reason=HELD_OUT_REASON) if d.id in screened else d
            for d in decisions
        ]
    by_row: dict[str, list[Decision]] = {}
    for decision in decisions:
        by_row.setdefault(decision.id.rsplit(".", 1)[0], []).append(decision)
    for row in rows:
        if row.status != PENDING:
            continue
        mine = by_row.get(row.id, [])
        accepted = [d for d in mine if d.accepted]
        if accepted:
            row.keep("\n".join(d.instruction for d in accepted))
        elif mine:
            row.reject(Reject.NO_INSTRUCTION, mine[0].reason)
        else:
            row.reject(Reject.NO_INSTRUCTION, "no task in the continuation")
    return SynthesisResult(rows, decisions, [prompts[d.id] for d in decisions if d.accepted])


def score_filter(record: Record, quality_threshold: float, following_threshold: float) -> Record:
    """Keep a self-assessed pair whose scores reach both thresholds; reject it otherwise."""
    if record.status != PENDING:
        return record
    low = [
        f"{aspect} {record.scores[aspect]:g} < {threshold:g}"
        for aspect, threshold in ((QUALITY, quality_threshold), (FOLLOWING, following_threshold))
        if record.scores.get(aspect, 0.0) < threshold
    ]
    if low:
        return record.reject(Reject.LOW_SCORE, ", ".join(low))
    return record.keep(record.response or "")


def score_quality(records: list[Record]) -> dict[str, float | int | None]:
    """How the self-assessment did against gold answers (where the world has them): the mean
    quality score of right and of wrong answers and its ROC AUC, over the answers whose
    quality score parsed (the filter rejects the others as unscored)."""
    with_gold = [r for r in records if r.gold is not None and QUALITY in r.scores]
    right = [r for r in with_gold if is_correct(r, r.response)]
    wrong = [r for r in with_gold if not is_correct(r, r.response)]

    def mean(rows: list[Record]) -> float | None:
        return round(sum(r.scores[QUALITY] for r in rows) / len(rows), 3) if rows else None

    return {
        "scored_with_gold": len(with_gold),
        "mean_quality_right": mean(right),
        "mean_quality_wrong": mean(wrong),
        "quality_auc": separation_auc(
            [r.scores[QUALITY] for r in right], [r.scores[QUALITY] for r in wrong]
        ),
    }


def separation_auc(right: Sequence[float], wrong: Sequence[float]) -> float | None:
    """ROC AUC of a score separating right answers from wrong ones: the chance that a random
    right answer scores above a random wrong one, ties counting half (Mann-Whitney U over the
    product of the group sizes). None without both groups."""
    if not right or not wrong:
        return None
    ranked = sorted(wrong)
    above = 0.0
    for score in right:
        below, up_to = bisect.bisect_left(ranked, score), bisect.bisect_right(ranked, score)
        above += below + 0.5 * (up_to - below)
    return round(above / (len(right) * len(wrong)), 4)


# --- the demo world's warm-up -------------------------------------------------------------


def warmup_examples(
    labeled: list[Record],
    seeds: Sequence[str],
    *,
    seed: int,
    shots: int,
    from_generated: int,
    template_set: str = "default",
    synthesis_per_problem: int = 1,
):
    """Oracle-written examples of the two skills, from the meta-skill records (the model's
    own answers to demo problems): continue a few-shot list of problems with a new one
    (``synthesis_per_problem`` lists per record; the task's synthesis form where it has one),
    and score an answer's quality and instruction following."""
    rng = random.Random(f"warmup:{seed}")
    questions = [r.prompt or "" for r in labeled]
    examples = []
    for index, record in enumerate(labeled):
        others = questions[:index] + questions[index + 1 :]
        for repeat in range(synthesis_per_problem):
            prompt = few_shot_prompt(
                seeds,
                rng.sample(others, min(from_generated, len(others))),
                rng,
                shots,
                from_generated,
                record.task,
                template_set,
            )
            target = task_named(record.task).synthesis_target(record, prompt) or record.prompt
            examples.append(
                TrainExample(
                    f"{record.prompt_id}:synthesize{repeat or ''}",
                    (Message("user", prompt),),
                    target or "",
                    "warmup_synthesize",
                )
            )
        written = (
            task_named(record.task).assessment(record, record.response)
            if record.response is not None
            else None
        )
        if written is None:
            continue
        texts = {QUALITY: written[0], FOLLOWING: written[1]}
        for aspect, text in texts.items():
            examples.append(
                TrainExample(
                    f"{record.id}:{aspect}",
                    tuple(assess_prompt(record, aspect, template_set)),
                    text,
                    f"warmup_{aspect}",
                )
            )
    return examples + own_answer_replay(labeled, template_set)
