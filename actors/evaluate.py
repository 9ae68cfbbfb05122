"""Held-out evaluation and inference-time self-refinement on an engine pool.

:func:`evaluate` runs two pipelines over the evaluation problems: the greedy answer followed
by self-feedback and up to ``eval.refine_max_iters`` refinements (direct and refine
accuracy, and the judge's precision/recall; only the direct answer with ``eval.critique``
off), and ``eval.sc_samples`` sampled answers per
problem for self-consistency (each critiqued and refined too with ``eval.sc_refine``, whose
refined answers then vote as well). :func:`refine` is the same machinery for any prompt file:
``selfevo refine``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.pipeline import run_configured
from selfevo.config import SelfEvoConfig
from selfevo.evaluation import heldout_metrics, vote
from selfevo.generation import GenerationParams
from selfevo.records import Record
from selfevo.stages import (
    FEEDBACK,
    GENERATE,
    REFINE,
    REJUDGE,
    expand_samples,
    refined_answer,
    self_chain,
)

REFINE_STAGES = (GENERATE, FEEDBACK, REFINE, REJUDGE)


def generation_params(config: SelfEvoConfig) -> tuple[GenerationParams, GenerationParams]:
    """(answer params, critique params): answers sample as configured, critiques are greedy."""
    params = GenerationParams.from_config(config.sampling, n=1, seed=config.run.seed)
    feedback = params.with_(max_new_tokens=config.sampling.feedback_max_new_tokens)
    return params, feedback.with_(temperature=0.0)


def evaluate(
    config: SelfEvoConfig,
    router: Any,
    problems: list[Record],
    out_dir: str | Path,
    emit: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Direct, refine and sc@n accuracy (Wilson 95% intervals) of the pool's current model."""
    out_dir = Path(out_dir)
    params, feedback_params = generation_params(config)
    greedy = params.with_(temperature=0.0)
    rows = expand_samples(problems, 1)
    stages = REFINE_STAGES if config.eval.critique else (GENERATE,)
    iters = config.eval.refine_max_iters if config.eval.critique else 0
    chain = self_chain(iters, stages, with_filter=False, judge_by=config.recipe.judge_by.value)
    refined = run_configured(
        rows, router, chain, out_dir / "refine", config, greedy, feedback_params, emit
    )
    sampled = None
    sc_refine = config.eval.sc_refine and iters > 0
    if config.eval.sc_samples > 0:
        sc_params = params.with_(temperature=config.eval.sc_temperature)
        rows = expand_samples(problems, config.eval.sc_samples)
        sc_chain = (
            self_chain(iters, stages, with_filter=False, judge_by=config.recipe.judge_by.value)
            if sc_refine
            else self_chain(0, [GENERATE], with_filter=False)
        )
        sampled = run_configured(
            rows,
            router,
            sc_chain,
            out_dir / "sc",
            config,
            sc_params,
            feedback_params if sc_refine else sc_params,
            emit,
        )
    metrics = heldout_metrics(
        refined,
        sampled,
        with_refine=iters > 0,
        refine_answer=config.eval.refine_answer.value,
        sc_refine=sc_refine,
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def refine(
    config: SelfEvoConfig,
    router: Any,
    prompts: list[Record],
    output: str | Path,
    *,
    samples: int = 1,
    max_iters: int = 2,
    emit: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Answer, self-critique and refine (until judged correct, at most ``max_iters`` times);
    with ``samples`` > 1, sample that many answers per prompt and majority-vote the refined
    ones. Writes one JSON line per prompt: its final ``output``, ``answer`` and every sample.
    """
    output = Path(output)
    params, feedback_params = generation_params(config)
    if samples == 1:
        params = params.with_(temperature=0.0)
    elif params.greedy:
        params = params.with_(temperature=config.eval.sc_temperature)
    rows = expand_samples(prompts, samples)
    chain = self_chain(
        max_iters, REFINE_STAGES, with_filter=False, judge_by=config.recipe.judge_by.value
    )
    work = output.with_name(output.stem + ".stages")
    records = run_configured(rows, router, chain, work, config, params, feedback_params, emit)
    policy = config.eval.refine_answer.value
    votes = vote(records, refine_answer=policy)
    by_prompt: dict[str, list[Record]] = {}
    for record in sorted(records, key=lambda r: (r.prompt_id, r.sample_index)):
        by_prompt.setdefault(record.prompt_id, []).append(record)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as sink:
        for prompt in prompts:
            group, answer = by_prompt[prompt.prompt_id], votes[prompt.prompt_id]
            final = refined_answer(group[0], policy) or "" if samples == 1 else None
            sink.write(json.dumps(_refine_line(prompt.prompt_id, group, answer, final)) + "\n")
    return {
        "output": str(output),
        "prompts": len(prompts),
        "samples": samples,
        "refined_samples": sum(1 for r in records if r.refined_response is not None),
    }


def _refine_line(
    prompt_id: str, group: list[Record], answer: Any, final: str | None
) -> dict[str, Any]:
    """One prompt's line: its ``output`` (the refined answer, or the vote when sampled)."""
    return {
        "id": prompt_id,
        "output": final if final is not None else f"The answer is {answer}.",
        "answer": answer,
        "samples": [
            {
                "response": r.response,
                "judgement": r.judgement,
                "refined_response": r.refined_response,
                "refined_judgement": r.refined_judgement,
                "refinements": int(r.meta.get("refinements", "0")),
            }
            for r in group
        ],
    }
