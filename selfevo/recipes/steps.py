"""The steps every recipe shares: meta-skill labeling and training, a round's fine-tuning, the
weight handoff, held-out evaluation and the report.

Each is a handler ``(ctx, round_index) -> (outputs, metrics)``; a recipe's own steps sit
beside these in its module. :func:`filtered` is how a recipe's filter step writes its kept
and rejected rows.
"""

from __future__ import annotations

from typing import Any

from selfevo import datasets
from selfevo.recipes.base import RunContext, StepResult
from selfevo.records import Record, status_counts
from selfevo.report import write_report
from selfevo.stages import GENERATE, expand_samples, self_chain
from selfevo.training import mix_training_set, round_training, shuffled, starting_model


def meta_label(ctx: RunContext, index: int = 0) -> StepResult:
    """The base model answers the meta prompts; the labeler judges (and corrects) them."""
    out = ctx.run_dir / "meta"
    prompts = datasets.meta_prompts(ctx.config)
    records = expand_samples(prompts, 1, 0)
    chain = self_chain(0, [GENERATE], with_filter=False)
    records = ctx.run_chain(records, ctx.base_model, chain, out / "generate", ctx.params)
    records = ctx.label(records, out)
    counts = status_counts(records)
    judged = [r.judgement for r in records if r.judgement]
    metrics = {
        "prompts": len(prompts),
        "labeler": ctx.config.recipe.labeler.kind.value,
        "judged_correct": judged.count("correct"),
        "judged_incorrect": judged.count("incorrect"),
        "labeler_errors": counts.get("rejected:labeler_error", 0),
        "counts": counts,
    }
    ctx.emit(
        f"[meta.label] {metrics['judged_correct']} correct, "
        f"{metrics['judged_incorrect']} incorrect, {metrics['labeler_errors']} labeler errors"
    )
    return {"labeled": ctx.save_records(records, out / "labeled.parquet")}, metrics


def meta_train(ctx: RunContext, index: int = 0) -> StepResult:
    """Fine-tune the base model on the recipe's meta corpus (SELF's M_meta)."""
    corpus = shuffled(ctx.recipe.meta_corpus(ctx), ctx.config.run.seed)
    return ctx.train(corpus, ctx.base_model, ctx.run_dir / "meta")


def train(ctx: RunContext, index: int) -> StepResult:
    """Fine-tune on the rounds' filtered data as ``train.mode`` says (mixing in meta data)."""
    train_cfg, recipe = ctx.config.train, ctx.recipe
    has_meta = recipe.has_meta(ctx.config)
    rounds = [
        recipe.round_examples(ctx, ctx.records_of(f"round{i}.filter")) for i in range(1, index + 1)
    ]
    examples = mix_training_set(
        train_cfg.mode.value,
        recipe.meta_corpus(ctx) if has_meta else [],
        rounds,
        train_cfg.meta_mix_ratio,
        seed=ctx.config.run.seed + index,
    )
    if not examples:
        raise RuntimeError(
            f"round {index} has nothing to train on: its filter kept no rows and "
            "train.meta_mix_ratio mixes in no meta examples"
        )
    previous = ctx.model_of(f"round{index - 1}.train") if index > 1 else None
    meta_model = ctx.model_of("meta.train") if has_meta else None
    origin = ctx.base_model if recipe.restart_from_base else ctx.start_model()
    start = starting_model(train_cfg.mode.value, origin, meta_model, previous)
    out_dir = ctx.run_dir / f"round{index}"
    return ctx.train(examples, start, out_dir, round_training(ctx.config))


def handoff(ctx: RunContext, index: int) -> StepResult:
    """The engines wake up serving the round's new weights (reloaded, or an adapter swapped)."""
    model = ctx.model_of(f"round{index}.train")
    engines = ctx.serve(model).stats()["engines"]
    ctx.emit(f"[round{index}.handoff] engines serve {ctx.rel(model)}")
    return {"model": ctx.rel(model)}, {
        "engines": len(engines),
        "engines_awake": sum(not e["sleeping"] for e in engines),
        "backends": sorted({e["extra"].get("backend", "?") for e in engines}),
    }


def evaluate(ctx: RunContext, index: int) -> StepResult:
    """Held-out accuracy of the round's model (round 0: the model the rounds start from)."""
    model = ctx.start_model() if index == 0 else ctx.model_of(f"round{index}.train")
    out = ctx.run_dir / f"round{index}" / "eval"
    metrics = ctx.evaluate(model, out)
    ctx.emit(
        f"[round{index}.eval] direct {metrics['direct']['acc']:.3f}"
        + (f" refine {metrics['refine']['acc']:.3f}" if "refine" in metrics else "")
        + (f" sc {metrics['sc']['acc']:.3f}" if "sc" in metrics else "")
    )
    return {"metrics": ctx.rel(out / "metrics.json")}, metrics


def report(ctx: RunContext, index: int = 0) -> StepResult:
    """summary.json, report.md and the plots, from the manifest."""
    summary = write_report(ctx.run_dir)
    return {"summary": "summary.json"}, {"rounds": len(summary["rounds"])}


def filtered(
    ctx: RunContext,
    index: int,
    records: list[Record],
    quality: dict[str, Any],
    line: str | None = None,
) -> StepResult:
    """Write a round's filtered records and report the filter's quality (``line``, or
    kept/generated with kept vs all accuracy)."""
    path = ctx.save_records(records, ctx.run_dir / f"round{index}" / "filtered.parquet")
    if line is None:
        line = f"kept {quality['kept']}/{quality['generated']}"
        if quality["kept_acc"] is not None and quality["all_acc"] is not None:
            line += f", kept acc {quality['kept_acc']:.3f} vs all {quality['all_acc']:.3f}"
    ctx.emit(f"[round{index}.filter] {line}")
    return {"records": path}, {**quality, "counts": status_counts(records)}


def round_chain(
    ctx: RunContext, index: int, step: str, rows: list[Record], chain: list, params: Any
) -> tuple[list[Record], dict[str, str]]:
    """Run the round's current model over ``rows`` into ``round<index>/<step>``: the rows out
    and the step's manifest outputs (``records``)."""
    out = ctx.run_dir / f"round{index}" / step
    records = ctx.run_chain(rows, ctx.current_model(index), chain, out, params)
    return records, {"records": ctx.rel(out / "output.parquet")}


SHARED = {
    "meta.label": meta_label,
    "meta.train": meta_train,
    "train": train,
    "handoff": handoff,
    "eval": evaluate,
    "report": report,
}
