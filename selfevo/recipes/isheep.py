"""I-SHEEP (Liang et al., "Iterative Self-Enhancement from Scratch"): each round t,

    synthesize: M_{t-1} writes new instructions from few-shot seed (and earlier) tasks;
                near-duplicates (ROUGE-L), too short or long ones, and ones posing an
                evaluation problem (the task's ``problem_key``) are rejected with a reason
    generate:   M_{t-1} answers the accepted instructions
    assess:     M_{t-1} scores each answer's quality and instruction-following (1-10)
    filter:     keep answers at or above both thresholds
    train:      fine-tune (``train.mode``; I-SHEEP's default ``latest``: the starting model
                on the newest round's data only)
    handoff, eval

The selection logic is in :mod:`selfevo.isheep`. An optional warm-up (``recipe.skills_warmup``)
adds the meta steps: the model learns the synthesis and assessment forms first. Per round the
run keeps ``synthesis.parquet`` (each few-shot prompt), ``candidates.parquet`` (each candidate
with its verdict and reason) and ``prompts.parquet`` (the accepted instructions).
"""

from __future__ import annotations

from collections import Counter
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq

from selfevo import datasets, isheep
from selfevo.evaluation import filter_quality
from selfevo.recipes.base import Recipe, RunContext, StepResult
from selfevo.recipes.steps import SHARED, filtered, round_chain
from selfevo.records import Record, status_counts
from selfevo.stages import ASSESS_FOLLOWING, ASSESS_QUALITY, GENERATE, chain_of, expand_samples
from selfevo.tasks import task_named
from selfevo.training import TrainExample, examples_from_records


def synthesize(ctx: RunContext, index: int) -> StepResult:
    recipe, out = ctx.config.recipe, ctx.run_dir / f"round{index}"
    seeds, earlier = datasets.seed_tasks(ctx.config), _accepted_before(ctx, index)
    rows = isheep.synthesis_rows(
        [text for _, text in seeds],
        [text for _, text in earlier],
        recipe.synthesize_per_round,
        index,
        seed=ctx.config.run.seed,
        shots=recipe.synthesis_shots,
        from_generated=recipe.synthesis_from_generated,
        task=recipe.task,
        template_set=recipe.template_set,
    )
    model = ctx.current_model(index)
    rows = ctx.run_chain(rows, model, chain_of(GENERATE), out / "synthesis", ctx.params)
    task = task_named(recipe.task)
    evaluation = {task.problem_key(p) for p in datasets.eval_problems(ctx.config)}
    result = isheep.accept_synthesized(
        rows,
        seeds + earlier,
        threshold=recipe.rouge_l_threshold,
        min_words=recipe.instruction_min_words,
        max_words=recipe.instruction_max_words,
        make_prompt=partial(_prompt_record, task=recipe.task, round_index=index),
        parse=task.synthesized_tasks,
        held_out=lambda record: task.problem_key(record) in evaluation,
    )
    outputs = {
        "synthesis": ctx.save_records(result.rows, out / "synthesis.parquet"),
        "candidates": ctx.rel(_write_decisions(result.decisions, out / "candidates.parquet")),
        "prompts": ctx.save_records(result.prompts, out / "prompts.parquet"),
    }
    rejected = Counter(
        (d.reason or "").split(":", 1)[0] for d in result.decisions if not d.accepted
    )
    metrics = {
        "synthesis_prompts": len(rows),
        "candidates": len(result.decisions),
        "accepted": len(result.prompts),
        "rejected": dict(rejected),
        # None where the task cannot read a written problem back (no gold to check against)
        "with_gold": sum(1 for p in result.prompts if p.gold is not None)
        if task.prompt_record is not None
        else None,
    }
    ctx.emit(
        f"[round{index}.synthesize] {metrics['accepted']}/{metrics['candidates']} new "
        f"instructions accepted{_read_back(metrics['with_gold'])}; rejected: {dict(rejected)}"
    )
    return outputs, metrics


def _read_back(with_gold: int | None) -> str:
    return "" if with_gold is None else f" ({with_gold} read back as problems of the task)"


def generate(ctx: RunContext, index: int) -> StepResult:
    prompts = ctx.records_of(f"round{index}.synthesize", "prompts")
    if not prompts:
        ctx.emit(
            f"[round{index}.generate] warning: no synthesized instruction passed the "
            f"filters (see round{index}/candidates.parquet); this round trains on the "
            "warm-up replay alone"
        )
    records = expand_samples(prompts, ctx.config.sampling.n, index)
    answer = chain_of(GENERATE)
    records, outputs = round_chain(ctx, index, "generate", records, answer, ctx.params)
    return outputs, {"prompts": len(prompts), **status_counts(records)}


def assess(ctx: RunContext, index: int) -> StepResult:
    records = ctx.records_of(f"round{index}.generate")
    scores = chain_of(ASSESS_QUALITY, ASSESS_FOLLOWING)
    records, outputs = round_chain(ctx, index, "assess", records, scores, ctx.feedback_params)
    return outputs, status_counts(records)


def filter_by_scores(ctx: RunContext, index: int) -> StepResult:
    recipe = ctx.config.recipe
    records = ctx.records_of(f"round{index}.assess")
    for record in records:
        isheep.score_filter(record, recipe.quality_threshold, recipe.following_threshold)
    quality = {**filter_quality(records), **isheep.score_quality(records)}
    quality.pop("judge", None)  # I-SHEEP has no critic: the filter is the scores
    return filtered(ctx, index, records, quality)


def meta_corpus(ctx: RunContext) -> list[TrainExample]:
    """The warm-up: synthesis prompts over the seed tasks, and assessments of labeled answers."""
    recipe = ctx.config.recipe
    return isheep.warmup_examples(
        ctx.records_of("meta.label", "labeled"),
        [text for _, text in datasets.seed_tasks(ctx.config)],
        seed=ctx.config.run.seed,
        shots=recipe.synthesis_shots,
        from_generated=recipe.synthesis_from_generated,
        template_set=recipe.template_set,
        synthesis_per_problem=recipe.warmup_synthesis_per_problem,
    )


def _accepted_before(ctx: RunContext, index: int) -> list[tuple[str, str]]:
    accepted = []
    for i in range(1, index):
        table = pq.read_table(ctx.output(f"round{i}.synthesize", "prompts"))
        accepted += zip(table["id"].to_pylist(), table["prompt"].to_pylist(), strict=True)
    return accepted


def _prompt_record(candidate_id: str, text: str, *, task: str, round_index: int) -> Record:
    return datasets.synthesized_prompt(text, candidate_id, task, round_index)


def _write_decisions(decisions, path):
    rows = [
        {"id": d.id, "instruction": d.instruction, "accepted": d.accepted, "reason": d.reason}
        for d in decisions
    ]
    schema = pa.schema(
        [("id", pa.string()), ("instruction", pa.string()), ("accepted", pa.bool_()),
         ("reason", pa.string())]
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


RECIPE = Recipe(
    name="isheep",
    round_steps=("synthesize", "generate", "assess", "filter", "train", "handoff", "eval"),
    handlers={
        **SHARED,
        "synthesize": synthesize,
        "generate": generate,
        "assess": assess,
        "filter": filter_by_scores,
    },
    meta_corpus=meta_corpus,
    round_examples=lambda ctx, records: examples_from_records(records),
    has_meta=lambda config: config.recipe.skills_warmup,
    restart_from_base=False,
)
