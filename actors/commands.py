"""What the heavy CLI subcommands do; ``selfevo.cli`` imports this only when one runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from actors.evaluate import evaluate, refine
from actors.models import full_weights
from actors.pipeline import run_configured
from actors.pool import EnginePool
from actors.runtime import init_ray
from selfevo import datasets
from selfevo.config import SelfEvoConfig
from selfevo.generation import GenerationParams
from selfevo.readers import read_prompts
from selfevo.records import read_records, status_counts
from selfevo.stages import expand_samples, self_chain
from selfevo.tasks import resolve_model


def export_records(parquet_path: Path, output: Path) -> None:
    """Copy a records Parquet file to ``output`` (.parquet as is, .jsonl one row a line)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".parquet":
        shutil.copyfile(parquet_path, output)
        return
    if output.suffix != ".jsonl":
        raise ValueError(f"--output must end in .jsonl or .parquet, got {output.name}")
    with output.open("w") as sink:
        for record in read_records(parquet_path):
            row = record.to_row()
            row["scores"], row["meta"] = dict(record.scores), dict(record.meta)
            sink.write(json.dumps(row) + "\n")


def _pool(config: SelfEvoConfig, model: str) -> EnginePool:
    """Ray joined, and an engine pool serving ``model`` (a ``with`` block shuts it down)."""
    init_ray(config.cluster)
    return EnginePool.from_config(config, model_path=full_weights(resolve_model(model)))


def generate(
    config: SelfEvoConfig,
    model: str,
    input_path: str,
    output_path: str,
    stages: list[str] | None,
    fmt: str,
) -> dict:
    """Run a prompt file through the pipeline; returns the status counts."""
    prompts = read_prompts(input_path, fmt, task=config.recipe.task).raise_if_bad()
    records = expand_samples(prompts.records, config.sampling.n)
    output = Path(output_path)
    work_dir = output.with_name(output.stem + ".stages")
    chain = self_chain(config.recipe.max_refinements, stages, judge_by=config.recipe.judge_by.value)
    params = GenerationParams.from_config(config.sampling, n=1)
    feedback_params = params.with_(max_new_tokens=config.sampling.feedback_max_new_tokens)
    with _pool(config, model) as pool:
        rows = run_configured(
            records, pool.router, chain, work_dir, config, params, feedback_params
        )
    export_records(work_dir / "output.parquet", output)
    return {"output": str(output), "stage_files": str(work_dir / "stages"), **status_counts(rows)}


def evaluate_checkpoint(config: SelfEvoConfig, model: str, output: str | Path) -> dict:
    """``selfevo eval``: the held-out metrics of one checkpoint."""
    problems = datasets.eval_problems(config)
    with _pool(config, model) as pool:
        metrics = evaluate(config, pool.router, problems, output)
    return {"model": model, "problems": len(problems), **metrics}


def refine_file(
    config: SelfEvoConfig,
    model: str,
    input_path: str,
    output: str,
    samples: int,
    max_iters: int,
    fmt: str,
) -> dict:
    """``selfevo refine``: self-refined (and voted) answers for a prompt file."""
    if samples < 1 or max_iters < 0:
        raise ValueError("--samples must be >= 1 and --max-iters >= 0")
    prompts = read_prompts(input_path, fmt, task=config.recipe.task).raise_if_bad().records
    with _pool(config, model) as pool:
        return refine(config, pool.router, prompts, output, samples=samples, max_iters=max_iters)
