"""``selfevo bench generate``: the engine's batching gain, the pool's scaling, vLLM vs HF.

(a) The HF engine's batched generation against a plain loop calling ``model.generate`` one
    prompt at a time: same tiny model, same prompts, greedy; the outputs must be identical.
    The engine's static KV cache (its default on CPU) against transformers' dynamic one, on
    longer generations where the cache's growth shows: same text, tokens/s of each.
(b) A one-stage pipeline step (generation, as in a round or self-consistency sampling) on a
    local Ray with 1 and then 2 HF engines of one thread each: wall time against the engines'
    mean busy time (``wall_over_busy`` near 1: no engine sat idle, whatever Ray Data's start-up
    and the last batches cost) and rows/s, whose ratio is ``scaling``.
(c) vLLM (the CPU build here) against the HF engine on the same model and prompts, and vLLM
    called directly (``vllm.LLM``) against the same engine behind our pool (actor + router).

Each part uses the tiny model that shows what it measures. (a) uses a 64-wide, 2-layer model:
at batch 1 its cost is per-step overhead, as a real model's is on a GPU, so batching has
something to win; a wider model is compute-bound on two CPU cores at batch 1 already. (b) and
(c) use a 256-wide, 4-layer model (~2 M parameters, head size 64 as vLLM's CPU attention
needs), so the engines do enough work for the fixed cost of starting the stage actors (~3 s
here) to be measured against it rather than dominate it. Both sizes are in the report.
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


def bench_kv_cache(
    model_dir: Path, prompts: list[str], max_new_tokens: int, batch: int
) -> dict[str, Any]:
    """The HF engine's batched generation with a static KV cache (written in place, the
    engine's default on CPU) against transformers' dynamic one (grown by concatenation):
    each timed twice, in the order dynamic, static, static, dynamic, and the faster kept."""
    params = GenerationParams(max_new_tokens=max_new_tokens)
    engines = {kv: HFEngine(str(model_dir), max_batch_size=batch, kv_cache=kv) for kv in KV}
    seconds: dict[str, float] = {}
    results: dict[str, list] = {}
    for kv_cache in (*KV, *reversed(KV)):
        started = time.perf_counter()
        results[kv_cache] = engines[kv_cache].generate(prompts, params)
        elapsed = time.perf_counter() - started
        seconds[kv_cache] = min(elapsed, seconds.get(kv_cache, elapsed))
    static, dynamic = (_tokens_per_s(results[kv], seconds[kv]) for kv in ("static", "dynamic"))
    return {
        "prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "max_batch_size": batch,
        "static_tokens_per_s": static,
        "dynamic_tokens_per_s": dynamic,
        "static_over_dynamic": round(static / dynamic, 2),
        "outputs_identical": [c[0].text for c in results["static"]]
        == [c[0].text for c in results["dynamic"]],
    }


def _start_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def _records(prompts: list[str]) -> list[Record]:
    return [
        Record(id=str(i), prompt_id=str(i), prompt=text, task="math")
        for i, text in enumerate(prompts)
    ]


def bench_pipeline(
    model_dir: Path, prompts: list[str], max_new_tokens: int, batch: int, num_engines: int
) -> dict[str, Any]:
    """A one-stage step (generation, as in a round or self-consistency sampling) on a pool of
    ``num_engines`` HF engines with one thread each. ``engine_busy_seconds`` is the engines'
    mean busy time, so ``wall_over_busy`` near 1 means every engine was busy all along."""
    from actors.pipeline import run_pipeline
    from actors.pool import EnginePool
    from selfevo.stages import GENERATE, self_chain

    _start_ray()
    kwargs = {"backend": "hf", "model": str(model_dir), "max_batch_size": batch, "num_threads": 1}
    pool = EnginePool(kwargs, num_engines=num_engines, cpus_per_engine=0.5)
    pool.wait_ready()
    params = GenerationParams(max_new_tokens=max_new_tokens)
    _warm_up(pool, prompts, num_engines)
    try:
        with tempfile.TemporaryDirectory() as out:
            result = run_pipeline(
                _records(prompts),
                pool.router,
                self_chain(0, [GENERATE], with_filter=False),
                out,
                params=params,
                feedback_params=params,
                batch_size=batch,
                emit=lambda _: None,
            )
        per_engine = [e["busy_seconds"] for e in pool.stats()["engines"]]
    finally:
        pool.shutdown()
    busy = sum(per_engine) / len(per_engine)
    return {
        "rows": result.rows,
        "engines": num_engines,
        "wall_seconds": round(result.wall_seconds, 3),
        "engine_busy_seconds": round(busy, 3),
        "per_engine_busy_seconds": [round(b, 3) for b in per_engine],
        "wall_over_busy": round(result.wall_seconds / busy, 3),
        "rows_per_s": round(result.rows / result.wall_seconds, 2),
    }


def _warm_up(pool: Any, prompts: list[str], num_engines: int) -> None:
    """One short request per engine, all at once (so the router spreads them): a fresh
    process's first forward pass pays one-off costs that are not the pool's."""
    import ray

    warm = GenerationParams(max_new_tokens=2)
    ray.get([pool.router.generate.remote(prompts[:4], warm) for _ in range(num_engines)])
    ray.get([e.reset_stats.remote() for e in ray.get(pool.router.engine_handles.remote())])


def bench_scaling(
    model_dir: Path, prompts: list[str], max_new_tokens: int, batch: int
) -> dict[str, Any]:
    """The same step on 1 and on 2 engines, in one run: ``scaling`` is rows/s 2 over 1."""
    by_engines = {
        str(n): bench_pipeline(model_dir, prompts, max_new_tokens, batch, n) for n in (1, 2)
    }
    scaling = by_engines["2"]["rows_per_s"] / by_engines["1"]["rows_per_s"]
    return {"by_engines": by_engines, "scaling": round(scaling, 3)}


def _tokens_per_s(results: list, seconds: float) -> float:
    return round(sum(c.output_tokens for cs in results for c in cs) / seconds, 1)


def bench_vllm(
    model_dir: Path, prompts: list[str], max_new_tokens: int, batch: int
) -> dict[str, Any]:
    """vLLM against the HF engine on the same model and prompts (greedy, one process each), and
    vLLM called directly (``vllm.LLM``) against the same engine behind our pool (Ray actor,
    router, requests of ``batch`` prompts all in flight)."""
    from actors.engine_vllm import vllm_available

    if not vllm_available():
        return {"skipped": "vLLM is not installed"}
    params = GenerationParams(max_new_tokens=max_new_tokens)
    hf = HFEngine(str(model_dir), max_batch_size=batch)
    started = time.perf_counter()
    hf_results = hf.generate(prompts, params)
    hf_tps = _tokens_per_s(hf_results, time.perf_counter() - started)
    del hf
    direct_tps, direct_texts = _vllm_direct(model_dir, prompts, max_new_tokens)
    pool_tps, pool_texts = _vllm_pool(model_dir, prompts, params, batch)
    return {
        "hf_tokens_per_s": hf_tps,
        "vllm_tokens_per_s": direct_tps,
        "vllm_over_hf": round(direct_tps / hf_tps, 2),
        "pool_tokens_per_s": pool_tps,
        "pool_over_direct": round(pool_tps / direct_tps, 3),
        "outputs_identical_hf_vllm": [c[0].text for c in hf_results] == direct_texts,
        "outputs_identical_pool_direct": pool_texts == direct_texts,
    }


def _best_of_two(call: Any) -> tuple[float, Any]:
    """The faster of two timed calls (the first can still pay one-off costs)."""
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        result = call()
        timings.append(time.perf_counter() - started)
    return min(timings), result


def _vllm_direct(model_dir: Path, prompts: list[str], max_new_tokens: int) -> tuple[float, list]:
    import vllm

    from actors.engine_vllm import VLLMEngine
    from actors.models import encode_prompt, load_tokenizer

    VLLMEngine._set_cpu_environment(1.0, None)
    tokenizer = load_tokenizer(str(model_dir))
    inputs = [{"prompt_token_ids": encode_prompt(tokenizer, p)} for p in prompts]
    llm = vllm.LLM(model=str(model_dir), dtype="float32", enforce_eager=True, seed=0)
    sampling = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    llm.generate(inputs[:8], sampling, use_tqdm=False)  # warm-up
    seconds, outputs = _best_of_two(lambda: llm.generate(inputs, sampling, use_tqdm=False))
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    texts = [o.outputs[0].text for o in outputs]
    llm.llm_engine.engine_core.shutdown()
    return round(tokens / seconds, 1), texts


def _vllm_pool(
    model_dir: Path, prompts: list[str], params: GenerationParams, batch: int
) -> tuple[float, list]:
    import ray

    from actors.pool import EnginePool

    _start_ray()
    kwargs = {"backend": "vllm", "model": str(model_dir), "dtype": "float32"}
    pool = EnginePool({**kwargs, "enforce_eager": True}, num_engines=1, cpus_per_engine=0.5)
    try:
        pool.wait_ready()
        pool.generate(prompts[:8], params)  # warm-up
        chunks = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
        seconds, results = _best_of_two(
            lambda: ray.get([pool.router.generate.remote(chunk, params) for chunk in chunks])
        )
    finally:
        pool.shutdown()
    flat = [cs for chunk in results for cs in chunk]
    return _tokens_per_s(flat, seconds), [c[0].text for c in flat]


ENGINE_MODEL = {"hidden_size": 64, "num_layers": 2}
PIPELINE_MODEL = {"hidden_size": 256, "num_layers": 4}
KV = ("dynamic", "static")
# Long enough that the cache's growth shows (the dynamic cache copies itself every step).
KV_CACHE_NEW_TOKENS = 128
# The pipeline's batches: smaller than the engine part's, so the last ones balance over engines.
PIPELINE_BATCH = 32


def _model(root: str, name: str, size: dict[str, int]) -> Path:
    return build_tiny_llama(
        Path(root) / name,
        hidden_size=size["hidden_size"],
        num_layers=size["num_layers"],
        intermediate_size=2 * size["hidden_size"],
        initializer_range=0.3,
    )


def run(
    prompts: int = 1024,
    max_new_tokens: int = 32,
    batch: int = 64,
    pipeline: bool = True,
    vllm: bool = True,
) -> dict[str, Any]:
    """Every measurement on one CPU thread per engine; returns the report as a dict."""
    torch.set_num_threads(1)
    texts = bench_prompts(prompts)
    with tempfile.TemporaryDirectory() as tmp:
        engine_model = _model(tmp, "engine", ENGINE_MODEL)
        report: dict[str, Any] = {
            "engine": {
                "model": ENGINE_MODEL,
                **bench_engine(engine_model, texts[:512], max_new_tokens, batch),
            },
            "kv_cache": {
                "model": ENGINE_MODEL,
                **bench_kv_cache(engine_model, texts[:256], KV_CACHE_NEW_TOKENS, batch),
            },
        }
        if pipeline or vllm:
            model_dir = _model(tmp, "pipeline", PIPELINE_MODEL)
        if pipeline:
            scaling = bench_scaling(model_dir, texts, max_new_tokens, PIPELINE_BATCH)
            report["pipeline"] = {"model": PIPELINE_MODEL, "steps": "generate", **scaling}
        if vllm:
            report["vllm"] = {
                "model": PIPELINE_MODEL,
                **bench_vllm(model_dir, texts, max_new_tokens, batch),
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
    kv = report["kv_cache"]
    lines.append(
        f"kv cache ({kv['prompts']} prompts, {kv['max_new_tokens']} new tokens): static "
        f"{kv['static_tokens_per_s']} tok/s vs dynamic {kv['dynamic_tokens_per_s']} tok/s: "
        f"{kv['static_over_dynamic']}x, outputs identical: {kv['outputs_identical']}"
    )
    if "pipeline" in report:
        pipe = report["pipeline"]
        lines.append(f"pipeline (one generate stage, HF engines): scaling {pipe['scaling']}x")
        for engines, entry in pipe["by_engines"].items():
            lines.append(
                f"  {engines} engine(s): {entry['rows']} rows in {entry['wall_seconds']} s "
                f"({entry['rows_per_s']} rows/s), engines busy {entry['engine_busy_seconds']} s "
                f"each: wall/busy {entry['wall_over_busy']}"
            )
    if "vllm" in report:
        v = report["vllm"]
        if "skipped" in v:
            lines.append(f"vllm: skipped ({v['skipped']})")
        else:
            lines += [
                f"vllm: {v['vllm_tokens_per_s']} tok/s vs HF {v['hf_tokens_per_s']} tok/s "
                f"({v['vllm_over_hf']}x), same greedy text: {v['outputs_identical_hf_vllm']}",
                f"  through our pool {v['pool_tokens_per_s']} tok/s vs vLLM direct: "
                f"{v['pool_over_direct']}x, same text: {v['outputs_identical_pool_direct']}",
            ]
    return "\n".join(lines)
