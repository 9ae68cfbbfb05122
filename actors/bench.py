"""``selfevo bench generate``: the engine's batching gain and the pipeline's overhead.

(a) The HF engine's batched generation against a plain loop calling ``model.generate`` one
    prompt at a time: same tiny model, same prompts, greedy; the outputs must be identical.
(b) The whole stage chain on a local Ray: the pipeline's wall time against the time the
    engines spent generating (their summed busy time). The ratio is the orchestration overhead:
    Ray Data start-up, UDF actors, moving batches and any moment the engines sat idle.

Each part uses the tiny model that shows what it measures. (a) uses a 64-wide, 2-layer model:
at batch 1 its cost is per-step overhead, as a real model's is on a GPU, so batching has
something to win; a wider model is compute-bound on two CPU cores at batch 1 already. (b) uses
a 256-wide, 4-layer model (~2 M parameters), so the engines do enough work for the fixed cost
of starting the stage actors (~5 s here) to be measured against it rather than dominate it.
Both sizes are in the report.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from actors.engine_hf import HFEngine, generate_unbatched
from actors.models import build_tiny_llama
from selfevo.generation import GenerationParams
from selfevo.records import Record


def bench_prompts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"Sam has {rng.randint(1, 999)} marbles and finds {rng.randint(1, 999)} more. "
        "How many marbles does Sam have now?" + " Explain." * rng.randint(0, 4)
        for _ in range(count)
    ]


def _naive_loop(engine: HFEngine, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int]:
    completions = [generate_unbatched(engine, p, max_new_tokens) for p in prompts]
    return [c.text for c in completions], sum(c.output_tokens for c in completions)


def bench_engine(
    model_dir: Path, prompts: list[str], max_new_tokens: int, batch: int
) -> dict[str, Any]:
    engine = HFEngine(str(model_dir), max_batch_size=batch)
    engine.generate(prompts[:8], GenerationParams(max_new_tokens=4))  # warm-up
    started = time.perf_counter()
    batched = engine.generate(prompts, GenerationParams(max_new_tokens=max_new_tokens))
    batched_s = time.perf_counter() - started
    batched_tokens = sum(c[0].output_tokens for c in batched)
    started = time.perf_counter()
    naive_texts, naive_tokens = _naive_loop(engine, prompts, max_new_tokens)
    naive_s = time.perf_counter() - started
    mismatches = sum(a[0].text != b for a, b in zip(batched, naive_texts, strict=True))
    return {
        "prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "max_batch_size": batch,
        "batched_tokens_per_s": round(batched_tokens / batched_s, 1),
        "naive_tokens_per_s": round(naive_tokens / naive_s, 1),
        "speedup": round((batched_tokens / batched_s) / (naive_tokens / naive_s), 2),
        "batched_seconds": round(batched_s, 2),
        "naive_seconds": round(naive_s, 2),
        "outputs_identical": mismatches == 0,
        "mismatches": mismatches,
    }


def bench_pipeline(
    model_dir: Path, prompts: list[str], max_new_tokens: int, batch: int, num_engines: int
) -> dict[str, Any]:
    import ray

    from actors.pipeline import run_pipeline
    from actors.pool import EnginePool
    from selfevo.stages import self_chain

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = EnginePool(
        {"backend": "hf", "model": str(model_dir), "max_batch_size": batch},
        num_engines=num_engines,
        cpus_per_engine=0.5,
        num_threads=1,
    )
    pool.wait_ready()
    records = [
        Record(id=str(i), prompt_id=str(i), prompt=text, task="math")
        for i, text in enumerate(prompts)
    ]
    params = GenerationParams(max_new_tokens=max_new_tokens)
    try:
        with tempfile.TemporaryDirectory() as out:
            result = run_pipeline(
                records,
                pool.router,
                self_chain(1),
                out,
                params=params,
                feedback_params=params,
                batch_size=batch,
                emit=lambda _: None,
            )
        busy = sum(e["busy_seconds"] for e in pool.stats()["engines"])
    finally:
        pool.shutdown()
    return {
        "rows": result.rows,
        "engines": num_engines,
        "stage_rows": result.stage_rows,
        "wall_seconds": round(result.wall_seconds, 2),
        "engine_busy_seconds": round(busy, 2),
        "wall_over_busy": round(result.wall_seconds / busy, 3),
        "counts": result.counts,
    }


ENGINE_MODEL = {"hidden_size": 64, "num_layers": 2}
PIPELINE_MODEL = {"hidden_size": 256, "num_layers": 4}


def _model(root: str, name: str, size: dict[str, int]) -> Path:
    return build_tiny_llama(
        Path(root) / name,
        hidden_size=size["hidden_size"],
        num_layers=size["num_layers"],
        intermediate_size=2 * size["hidden_size"],
        initializer_range=0.3,
    )


def run(
    prompts: int = 512, max_new_tokens: int = 32, batch: int = 64, pipeline: bool = True
) -> dict[str, Any]:
    """Both measurements on one CPU thread per engine; returns the report as a dict."""
    torch.set_num_threads(1)
    texts = bench_prompts(prompts)
    with tempfile.TemporaryDirectory() as tmp:
        report: dict[str, Any] = {
            "engine": {
                "model": ENGINE_MODEL,
                **bench_engine(_model(tmp, "engine", ENGINE_MODEL), texts, max_new_tokens, batch),
            }
        }
        if pipeline:
            model_dir = _model(tmp, "pipeline", PIPELINE_MODEL)
            report["pipeline"] = {
                "model": PIPELINE_MODEL,
                **bench_pipeline(model_dir, texts, max_new_tokens, batch, 1),
            }
    return report


def format_report(report: dict[str, Any]) -> str:
    engine = report["engine"]
    lines = [
        f"engine ({engine['prompts']} prompts, greedy, {engine['max_new_tokens']} new tokens, "
        f"batch {engine['max_batch_size']}):",
        f"  batched {engine['batched_tokens_per_s']} tok/s vs one-at-a-time "
        f"{engine['naive_tokens_per_s']} tok/s: {engine['speedup']}x, "
        f"outputs identical: {engine['outputs_identical']}",
    ]
    if "pipeline" in report:
        pipe = report["pipeline"]
        lines += [
            f"pipeline ({pipe['rows']} rows, 5 stages, {pipe['engines']} engine):",
            f"  wall {pipe['wall_seconds']} s vs engine busy {pipe['engine_busy_seconds']} s: "
            f"{pipe['wall_over_busy']}x",
        ]
    return "\n".join(lines)
