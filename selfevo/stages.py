"""The stages of a SELF round as pure functions over records.

A generating stage is three functions: ``select`` (which rows it works on), ``messages`` (the
prompt for a row) and ``apply`` (write a completion back, or reject the row with a reason).
The Ray plumbing in ``actors.pipeline`` only moves batches and calls an engine; everything
that decides what happens to a row is here, and is tested without Ray.

SELF's chain is generate -> feedback -> (refine -> rejudge) x k -> filter. Refinement touches
only rows judged incorrect, and the latest refinement replaces the earlier one. A row that a
stage rejects passes through the remaining stages untouched, so every input row reaches the
output exactly once. Departures from SELF: a response cut off at ``max_new_tokens`` is
rejected outright (its final answer is missing), and a critique cut off before its verdict
line is rejected with a reason that names the limit to raise. A critique becomes a judgement
by its verdict line (SELF's way) or, with ``judge_by=rederived_answer``, by comparing the
answer it works out with the response's (:func:`selfevo.parsers.rederived_judgement`).

The other recipes add stages over the same records: I-SHEEP's self-assessment (a 1-10 score
for quality and one for instruction following, into ``scores``; an unparseable score is a
``no_score`` rejection) and mistake analysis's induction (a row with ``meta["kind"] ==
"mistake"`` is answered with a deliberately flawed response) and guided analysis (the model,
told that response is flawed, explains why; into ``feedback``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial

from selfevo.generation import LENGTH, Completion
from selfevo.parsers import given_answer, parse_judgement, parse_score, rederived_judgement
from selfevo.records import CORRECT, INCORRECT, PENDING, Message, Record, Reject
from selfevo.tasks import task_named
from selfevo.templates import answer_messages, build_messages

GENERATE, FEEDBACK, REFINE, REJUDGE, FILTER = "generate", "feedback", "refine", "rejudge", "filter"
STAGE_NAMES = (GENERATE, FEEDBACK, REFINE, REJUDGE, FILTER)
# I-SHEEP's self-assessment and mistake analysis's induction and guided analysis.
ASSESS_QUALITY, ASSESS_FOLLOWING = "assess_quality", "assess_following"
INDUCE, ANALYZE = "induce", "analyze"
# How a critique becomes a judgement: its verdict line, or the answer it re-derives.
VERDICT_LINE, REDERIVED_ANSWER = "verdict_line", "rederived_answer"
JUDGE_BY = (VERDICT_LINE, REDERIVED_ANSWER)
# Which answer self-refinement ends with: the latest refinement whatever its verdict (SELF's),
# or the latest answer the critic accepted, falling back to the first response when it
# accepted none.
LATEST, ACCEPTED = "latest", "accepted"
REFINE_ANSWERS = (LATEST, ACCEPTED)
# Rows of a mistake-analysis round: ``meta["kind"]`` is ``mistake`` for an induced one.
KIND, MISTAKE = "kind", "mistake"


@dataclass(frozen=True)
class Stage:
    """One step of the chain. ``feedback`` stages use ``sampling.feedback_max_new_tokens``."""

    name: str
    select: Callable[[Record], bool]
    messages: Callable[[Record, str], list[Message]]
    apply: Callable[[Record, Completion, int], None]
    feedback: bool = False

    @property
    def generates(self) -> bool:
        return self.name != FILTER


def expand_samples(records: Iterable[Record], n: int, round_index: int = 0) -> list[Record]:
    """One row per (prompt, sample): ids ``<prompt_id>#<k>``, the round stamped on each."""
    out = []
    for record in records:
        for k in range(n):
            row = Record.from_row(record.to_row())
            row.id, row.sample_index, row.round = f"{record.prompt_id}#{k}", k, round_index
            out.append(row)
    return out


def latest_response(record: Record) -> str | None:
    return record.refined_response if record.refined_response is not None else record.response


def refined_answer(record: Record, policy: str = LATEST) -> str | None:
    """The answer a row's self-refinement ends with, by ``policy`` (one of :data:`REFINE_ANSWERS`).

    ``accepted`` does not trade the first response for a refinement the critic still judges
    incorrect (or could not judge): such a refinement is no evidence of a better answer.
    """
    if policy not in REFINE_ANSWERS:
        raise ValueError(
            f"unknown refine answer policy {policy!r}; expected one of {REFINE_ANSWERS}"
        )
    unaccepted = record.refined_response is not None and record.refined_judgement != CORRECT
    return record.response if policy == ACCEPTED and unaccepted else latest_response(record)


def latest_judgement(record: Record) -> str | None:
    return record.refined_judgement if record.refined_response is not None else record.judgement


def _latest_feedback(record: Record) -> str | None:
    return record.refined_feedback if record.refined_response is not None else record.feedback


# --- generate ----------------------------------------------------------------------------


def is_mistake_row(record: Record) -> bool:
    return record.meta.get(KIND) == MISTAKE


def _needs_response(record: Record) -> bool:
    return record.status == PENDING and record.response is None and not is_mistake_row(record)


def _reject_unusable(record: Record, completion: Completion, max_tokens: int, what: str) -> None:
    """A response cut off at the token limit, or empty, cannot be kept."""
    if completion.finish_reason == LENGTH:
        record.reject(Reject.TRUNCATED, f"{what} hit max_new_tokens={max_tokens}")
    elif not completion.text.strip():
        record.reject(Reject.EMPTY_RESPONSE, None if what == "response" else f"empty {what}")


def _apply_response(record: Record, completion: Completion, max_tokens: int) -> None:
    record.response = completion.text
    _reject_unusable(record, completion, max_tokens, "response")


# --- feedback and re-judge ---------------------------------------------------------------


def feedback_prompt(record: Record, response: str, template_set: str = "default") -> list[Message]:
    """The critique prompt for ``response`` to ``record``: for the stages and for training."""
    return build_messages(
        "feedback",
        task=record.task,
        template_set=template_set,
        question=record.question_text(),
        response=response,
        answer=given_answer(response, task_named(record.task).strict_answers),
    )


def refine_prompt(
    record: Record, response: str, feedback: str, template_set: str = "default"
) -> list[Message]:
    """The refinement prompt for ``response`` given its ``feedback``."""
    return build_messages(
        "refine",
        task=record.task,
        template_set=template_set,
        question=record.question_text(),
        response=response,
        answer=given_answer(response, task_named(record.task).strict_answers),
        feedback=feedback,
    )


def _feedback_messages(record: Record, template_set: str) -> list[Message]:
    return feedback_prompt(record, latest_response(record) or "", template_set)


def _judge(
    feedback: Completion, response: str | None, max_tokens: int, what: str, judge_by: str
) -> tuple[str | None, str | None]:
    if judge_by == REDERIVED_ANSWER:
        verdict, missing = rederived_judgement(feedback.text, response), "its own answer"
    else:
        verdict, missing = parse_judgement(feedback.text), "its verdict line"
    if verdict.judgement is None and feedback.finish_reason == LENGTH:
        return None, (
            f"{what} cut at {max_tokens} tokens before {missing} "
            "(raise sampling.feedback_max_new_tokens)"
        )
    return verdict.judgement, None if verdict.judgement else f"{what}: {verdict.reason}"


def _needs_feedback(record: Record) -> bool:
    return (
        record.status == PENDING
        and record.response is not None
        and record.feedback is None
        and not is_mistake_row(record)
    )


def _apply_feedback(
    record: Record, completion: Completion, max_tokens: int, judge_by: str = VERDICT_LINE
) -> None:
    record.feedback = completion.text
    record.judgement, problem = _judge(
        completion, record.response, max_tokens, "feedback", judge_by
    )
    if problem:
        record.reject(Reject.NO_JUDGEMENT, problem)


def _needs_rejudge(record: Record) -> bool:
    return (
        record.status == PENDING
        and record.refined_response is not None
        and record.refined_judgement is None
    )


def _apply_rejudge(
    record: Record, completion: Completion, max_tokens: int, judge_by: str = VERDICT_LINE
) -> None:
    record.refined_feedback = completion.text
    record.refined_judgement, problem = _judge(
        completion, record.refined_response, max_tokens, "re-judge", judge_by
    )
    if problem:
        record.reject(Reject.NO_JUDGEMENT, problem)


# --- refine ------------------------------------------------------------------------------


def _needs_refinement(record: Record) -> bool:
    return record.status == PENDING and latest_judgement(record) == INCORRECT


def _refine_messages(record: Record, template_set: str) -> list[Message]:
    return refine_prompt(
        record, latest_response(record) or "", _latest_feedback(record) or "", template_set
    )


def _apply_refinement(record: Record, completion: Completion, max_tokens: int) -> None:
    record.refined_response = completion.text
    record.refined_feedback = record.refined_judgement = None
    record.meta["refinements"] = str(int(record.meta.get("refinements", "0")) + 1)
    _reject_unusable(record, completion, max_tokens, "refinement")


# --- self-assessment (I-SHEEP) -----------------------------------------------------------


def assess_prompt(record: Record, aspect: str, template_set: str = "default") -> list[Message]:
    """The 1-10 self-assessment prompt for ``aspect`` (``quality`` or ``following``)."""
    response = record.response or ""
    return build_messages(
        f"assess_{aspect}",
        task=record.task,
        template_set=template_set,
        question=record.question_text(),
        response=response,
        answer=given_answer(response, task_named(record.task).strict_answers),
        **task_named(record.task).prompt_fields(record, response),
    )


def _assess_stage(aspect: str) -> Stage:
    def select(record: Record) -> bool:
        return (
            record.status == PENDING and record.response is not None and aspect not in record.scores
        )

    def apply(record: Record, completion: Completion, max_tokens: int) -> None:
        record.meta[f"{aspect}_assessment"] = completion.text
        score = parse_score(completion.text)
        if score.value is not None:
            record.scores[aspect] = score.value
        elif completion.finish_reason == LENGTH:
            record.reject(
                Reject.NO_SCORE,
                f"{aspect} assessment cut at {max_tokens} tokens before its score "
                "(raise sampling.feedback_max_new_tokens)",
            )
        else:
            record.reject(Reject.NO_SCORE, f"{aspect}: {score.reason}")

    return Stage(
        f"assess_{aspect}",
        select,
        lambda r, t: assess_prompt(r, aspect, t),
        apply,
        feedback=True,
    )


# --- mistake induction and guided analysis ------------------------------------------------


def analysis_prompt(
    record: Record, response: str, guided: bool, template_set: str = "default"
) -> list[Message]:
    """The analysis prompt for ``response``: guided (told it is flawed) or not (for training)."""
    return build_messages(
        "mistake_analyze_guided" if guided else "mistake_analyze",
        task=record.task,
        template_set=template_set,
        question=record.question_text(),
        response=response,
        answer=given_answer(response, task_named(record.task).strict_answers),
    )


def _needs_mistake(record: Record) -> bool:
    return record.status == PENDING and record.response is None and is_mistake_row(record)


def _induce_messages(record: Record, template_set: str) -> list[Message]:
    return build_messages(
        "mistake_induce", task=record.task, template_set=template_set, question=record.prompt
    )


def _needs_analysis(record: Record) -> bool:
    return (
        record.status == PENDING
        and is_mistake_row(record)
        and record.response is not None
        and record.feedback is None
    )


def _apply_analysis(record: Record, completion: Completion, max_tokens: int) -> None:
    record.feedback = completion.text
    record.judgement = parse_judgement(completion.text).judgement
    _reject_unusable(record, completion, max_tokens, "analysis")


# --- filter ------------------------------------------------------------------------------


def finalize(record: Record, judged: bool = True) -> Record:
    """The self-filter: keep the first response judged correct, reject the rest with a reason.

    With ``judged=False`` (a chain without a feedback stage) every pending response is kept.
    """
    if record.status != PENDING:
        return record
    if not judged:
        return record.keep(latest_response(record) or "")
    if record.judgement == CORRECT:
        return record.keep(record.response or "")
    if record.refined_response is not None and record.refined_judgement == CORRECT:
        return record.keep(record.refined_response)
    attempts = record.meta.get("refinements", "0")
    return record.reject(Reject.JUDGED_INCORRECT, f"after {attempts} refinement(s)")


def _never(record: Record) -> bool:
    return False


def _no_messages(record: Record, template_set: str) -> list[Message]:
    raise AssertionError("the filter stage does not generate")


def _no_apply(record: Record, completion: Completion, max_tokens: int) -> None:
    raise AssertionError("the filter stage does not generate")


STAGES: dict[str, Stage] = {
    GENERATE: Stage(GENERATE, _needs_response, lambda r, t: answer_messages(r, t), _apply_response),
    FEEDBACK: Stage(FEEDBACK, _needs_feedback, _feedback_messages, _apply_feedback, feedback=True),
    REFINE: Stage(REFINE, _needs_refinement, _refine_messages, _apply_refinement),
    REJUDGE: Stage(REJUDGE, _needs_rejudge, _feedback_messages, _apply_rejudge, feedback=True),
    FILTER: Stage(FILTER, _never, _no_messages, _no_apply),
    ASSESS_QUALITY: _assess_stage("quality"),
    ASSESS_FOLLOWING: _assess_stage("following"),
    INDUCE: Stage(INDUCE, _needs_mistake, _induce_messages, _apply_response),
    ANALYZE: Stage(
        ANALYZE,
        _needs_analysis,
        lambda r, t: analysis_prompt(r, r.response or "", True, t),
        _apply_analysis,
        feedback=True,
    ),
}


def chain_of(*names: str) -> list[Stage]:
    """The named stages, in the order given (for the recipes other than SELF)."""
    unknown = [name for name in names if name not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {sorted(STAGES)}")
    return [STAGES[name] for name in names]


def _judging(stage: Stage, judge_by: str) -> Stage:
    """``stage`` (feedback or rejudge) with its critiques judged the ``judge_by`` way."""
    if judge_by == VERDICT_LINE or not stage.feedback:
        return stage
    return replace(stage, apply=partial(stage.apply, judge_by=judge_by))


def self_chain(
    max_refinements: int = 1,
    stages: Iterable[str] | None = None,
    with_filter: bool = True,
    judge_by: str = VERDICT_LINE,
) -> list[Stage]:
    """The SELF stage chain, or the named subset of it (in chain order).

    ``refine`` and ``rejudge`` repeat ``max_refinements`` times. The filter ends the chain,
    so every row leaves with a final status; ``with_filter=False`` leaves rows pending for a
    caller that filters (or scores) them itself. ``judge_by`` is one of :data:`JUDGE_BY`.
    """
    wanted = set(stages) if stages is not None else set(STAGE_NAMES)
    unknown = wanted - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; expected some of {STAGE_NAMES}")
    if judge_by not in JUDGE_BY:
        raise ValueError(f"unknown judge_by {judge_by!r}; expected one of {JUDGE_BY}")
    chain = [STAGES[name] for name in (GENERATE, FEEDBACK) if name in wanted]
    for _ in range(max_refinements):
        chain += [STAGES[name] for name in (REFINE, REJUDGE) if name in wanted]
    chain = [_judging(stage, judge_by) for stage in chain]
    return [*chain, STAGES[FILTER]] if with_filter else chain
