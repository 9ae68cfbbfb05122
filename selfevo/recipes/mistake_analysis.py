"""Mistake analysis (Chen et al., "Gaining Wisdom from Setbacks"): each round t,

    generate:  M_{t-1} answers fresh prompts from the pool and, guided, writes a flawed
               response to each (the induced mistake)
    analyze:   told the response is flawed, M_{t-1} explains what is wrong with it
    filter:    keep the own answers, and the analyses of real mistakes that do not call the
               response correct
    train:     fine-tune on the analyses (with the unguided prompt, so the model learns to
               find mistakes it is not told about) and the own answers
    handoff, eval

The selection logic is in :mod:`selfevo.mistakes`. An optional warm-up
(``recipe.skills_warmup``) adds the meta steps.
"""

from __future__ import annotations

from selfevo import datasets, mistakes
from selfevo.recipes.base import Recipe, RunContext, StepResult
from selfevo.recipes.steps import SHARED, filtered, round_chain
from selfevo.records import Record, status_counts
from selfevo.stages import ANALYZE, GENERATE, INDUCE, chain_of
from selfevo.training import TrainExample


def generate(ctx: RunContext, index: int) -> StepResult:
    prompts = datasets.pool_slice(ctx.config, index)
    rows = mistakes.round_rows(prompts, index)
    answer_and_induce = chain_of(GENERATE, INDUCE)
    rows, outputs = round_chain(ctx, index, "generate", rows, answer_and_induce, ctx.params)
    return outputs, {"prompts": len(prompts), **status_counts(rows)}


def analyze(ctx: RunContext, index: int) -> StepResult:
    rows = ctx.records_of(f"round{index}.generate")
    rows, outputs = round_chain(ctx, index, "analyze", rows, chain_of(ANALYZE), ctx.feedback_params)
    return outputs, status_counts(rows)


def filter_analyses(ctx: RunContext, index: int) -> StepResult:
    rows = mistakes.finalize_round(ctx.records_of(f"round{index}.analyze"))
    quality = mistakes.round_quality(rows)
    line = (
        f"kept {quality['kept_answers']} own answers and {quality['kept_analyses']} "
        f"analyses of {quality['generated']} rows; induced responses wrong: "
        f"{quality['induced_wrong']}"
    )
    return filtered(ctx, index, rows, quality, line)


def meta_corpus(ctx: RunContext) -> list[TrainExample]:
    labeled = ctx.records_of("meta.label", "labeled")
    return mistakes.warmup_examples(labeled, ctx.config.recipe.template_set)


def round_examples(ctx: RunContext, records: list[Record]) -> list[TrainExample]:
    recipe = ctx.config.recipe
    return mistakes.training_examples(records, recipe.template_set, recipe.analysis_rows)


RECIPE = Recipe(
    name="mistake_analysis",
    round_steps=("generate", "analyze", "filter", "train", "handoff", "eval"),
    handlers={
        **SHARED,
        "generate": generate,
        "analyze": analyze,
        "filter": filter_analyses,
    },
    meta_corpus=meta_corpus,
    round_examples=round_examples,
    has_meta=lambda config: config.recipe.skills_warmup,
    restart_from_base=False,
)
