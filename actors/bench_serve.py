"""``selfevo bench serve``: what the OpenAI endpoint costs against the pool it serves from.

One engine pool serves a tiny model (the 256-wide, 4-layer model of ``bench generate``'s
pipeline part) behind ``selfevo serve``. The same prompts, greedy with the same
``max_tokens``, go (a) straight to the pool's router in batches all in flight (the offline
rate a run's pipeline gets) and (b) through the endpoint as one request each from
``clients`` concurrent clients using the official ``openai`` client. The report gives both
output-token rates and their ratio, the requests' p50/p95 latency, and whether the served
text equals the offline text.
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actors.bench import PIPELINE_MODEL, _best_of_two, _model, bench_prompts
from selfevo.config import load_config
from selfevo.records import Record
from selfevo.stages import GENERATE, STAGES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _offline(router: Any, messages: list, params: Any, batch: int) -> tuple[float, list[str]]:
    import ray

    chunks = [messages[i : i + batch] for i in range(0, len(messages), batch)]
    seconds, results = _best_of_two(
        lambda: ray.get([router.generate.remote(chunk, params) for chunk in chunks])
    )
    flat = [outputs[0] for chunk in results for outputs in chunk]
    return sum(c.output_tokens for c in flat) / seconds, [c.text for c in flat]


def _served(url: str, prompts: list[str], max_tokens: int, clients: int) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)

    def ask(prompt: str) -> tuple[float, int, str]:
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model="bench",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0.0,
        )
        return time.perf_counter() - started, reply.usage.completion_tokens, reply.choices[0]

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(ask, prompts[: 2 * clients]))  # warm-up: connections, the proxy's routes
        started = time.perf_counter()
        answers = list(pool.map(ask, prompts))
        wall = time.perf_counter() - started
    latencies = sorted(a[0] for a in answers)
    return {
        "tokens_per_s": sum(a[1] for a in answers) / wall,
        "texts": [a[2].message.content for a in answers],
        "p50_latency_s": round(statistics.median(latencies), 3),
        "p95_latency_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
        "wall_seconds": round(wall, 2),
    }


def run(
    prompts: int = 512, clients: int = 32, max_new_tokens: int = 32, backend: str = "hf"
) -> dict[str, Any]:
    """Offline vs served output tokens/s on one engine; returns the report as a dict."""
    from actors.evaluate import generation_params
    from actors.serve import start_serving

    texts = bench_prompts(prompts)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _model(tmp, "serve", PIPELINE_MODEL)
        overrides = [
            f"engine.backend={backend}",
            "engine.enforce_eager=true",
            f"serve.port={_free_port()}",
            "serve.api_key_env=",
            f"sampling.max_new_tokens={max_new_tokens}",
            "cluster.num_cpus=2",
        ]
        config = load_config("demo", overrides)
        served = start_serving(config, {"bench": str(model_dir)}, emit=lambda _: None)
        try:
            template_set = config.recipe.template_set
            records = [Record(id=str(i), prompt_id=str(i), prompt=t) for i, t in enumerate(texts)]
            messages = [STAGES[GENERATE].messages(r, template_set) for r in records]
            params = generation_params(config)[0].with_(temperature=0.0)
            router = served.routers["bench"]
            batch = config.engine.max_batch_size
            offline_tps, offline_texts = _offline(router, messages, params, batch)
            online = _served(served.url, texts, max_new_tokens, clients)
        finally:
            served.stop()
    return {
        "model": PIPELINE_MODEL,
        "backend": backend,
        "prompts": prompts,
        "clients": clients,
        "max_new_tokens": max_new_tokens,
        "offline_tokens_per_s": round(offline_tps, 1),
        "served_tokens_per_s": round(online["tokens_per_s"], 1),
        "served_over_offline": round(online["tokens_per_s"] / offline_tps, 3),
        "p50_latency_s": online["p50_latency_s"],
        "p95_latency_s": online["p95_latency_s"],
        "served_wall_seconds": online["wall_seconds"],
        "outputs_identical": online["texts"] == offline_texts,
    }
