"""SELF (Lu et al., "Language-Driven Self-Evolution for LLMs").

Meta-skill learning: the base model's answers to the meta prompts are judged and corrected
by a labeler (an oracle, a stronger local model or an OpenAI-compatible server), and M_meta
learns self-feedback and self-refinement from them (D_meta) plus the corrected answers (QA
pairs). Then, each round t:

    generate:  M_{t-1} answers fresh prompts from the pool (``sampling.n`` samples each)
    critique:  M_{t-1} critiques its answers and refines the ones it judges wrong
    filter:    keep what the model's own final judgement calls correct
    train:     fine-tune on the kept answers (``train.mode``: from M_0, M_meta or M_{t-1})
    handoff:   the engines serve M_t
    eval:      held-out direct, self-refined and self-consistency accuracy

Departures from the paper: the verdict is read from the critique's final ``Judgement:`` line
(or re-derived, ``recipe.judge_by``), so a quoted response cannot forge it; and for a task
that writes false alarms (``Task.false_alarm``), D_meta also holds refinements of right
answers whose check slipped, which keep the answer (``recipe.false_alarm_refinements``).
"""

from __future__ import annotations

from selfevo import datasets
from selfevo.evaluation import filter_quality
from selfevo.recipes.base import Recipe, RunContext, StepResult
from selfevo.recipes.steps import SHARED, filtered, round_chain
from selfevo.records import PENDING, Record, Reject, status_counts
from selfevo.stages import FEEDBACK, GENERATE, REFINE, REJUDGE, expand_samples, finalize
from selfevo.stages import self_chain as chain
from selfevo.training import TrainExample, examples_from_records, meta_examples, qa_examples


def generate(ctx: RunContext, index: int) -> StepResult:
    prompts = datasets.pool_slice(ctx.config, index)
    records = expand_samples(prompts, ctx.config.sampling.n, index)
    answer = chain(0, [GENERATE], with_filter=False)
    records, outputs = round_chain(ctx, index, "generate", records, answer, ctx.params)
    return outputs, {"prompts": len(prompts), **status_counts(records)}


def critique(ctx: RunContext, index: int) -> StepResult:
    recipe = ctx.config.recipe
    records = ctx.records_of(f"round{index}.generate")
    stages = [FEEDBACK, REFINE, REJUDGE]
    judge_by = recipe.judge_by.value
    feedback_and_refine = chain(
        recipe.max_refinements, stages, with_filter=False, judge_by=judge_by
    )
    records, outputs = round_chain(ctx, index, "critique", records, feedback_and_refine, ctx.params)
    refined = sum(1 for r in records if r.refined_response is not None)
    return outputs, {"rows": len(records), "refined": refined, **status_counts(records)}


def _unjudged(record: Record) -> bool:
    return (record.reject_reason or "").startswith(Reject.NO_JUDGEMENT)


def filter_kept(ctx: RunContext, index: int) -> StepResult:
    """Keep what the model judged correct (with ``recipe.self_filter`` off, every answer in
    its latest form, judged correct or not: the ablation's unfiltered arm)."""
    records = ctx.records_of(f"round{index}.critique")
    for record in records:
        if not ctx.config.recipe.self_filter and _unjudged(record):
            record.status = PENDING  # an answer whose critique had no verdict is still an answer
        finalize(record, judged=ctx.config.recipe.self_filter)
    return filtered(ctx, index, records, filter_quality(records))


def meta_corpus(ctx: RunContext) -> list[TrainExample]:
    """D_meta (critiques and refinements) plus the labeled QA pairs."""
    labeled = ctx.records_of("meta.label", "labeled")
    template_set = ctx.config.recipe.template_set
    qa = qa_examples(labeled, template_set)
    if not ctx.config.recipe.meta_skill_data:
        return qa
    return meta_examples(labeled, template_set, ctx.config.recipe.false_alarm_refinements) + qa


def round_examples(ctx: RunContext, records: list[Record]) -> list[TrainExample]:
    return examples_from_records(records)


RECIPE = Recipe(
    name="self",
    round_steps=("generate", "critique", "filter", "train", "handoff", "eval"),
    handlers={
        **SHARED,
        "generate": generate,
        "critique": critique,
        "filter": filter_kept,
    },
    meta_corpus=meta_corpus,
    round_examples=round_examples,
)
