"""Concurrent requests on a blocking engine: the HF engine behind an async front.

The pool's engine actors take many requests at once. vLLM batches them itself (continuous
batching); the Hugging Face engine generates one call at a time, so :class:`RequestBatcher`
queues the requests that arrive while it is busy and sends those with the same generation
settings to it as one batch. Sampled requests with a seed run alone: merged, their samples
would depend on what they were merged with, and a seeded batch must repeat exactly.

Every blocking engine call (generation, weight loads, sleep) runs on one worker thread, so a
weight load never lands in the middle of a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from selfevo.generation import Completion, GenerationParams

Request = tuple[list, GenerationParams, asyncio.Future]


def mergeable(params: GenerationParams) -> bool:
    return params.greedy or params.seed is None


class RequestBatcher:
    """Queues ``agenerate`` calls and runs them on ``engine.generate`` in merged batches."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.pending: list[Request] = []
        self.draining: asyncio.Task | None = None
        self.merged_batches = 0

    async def call(self, fn: Callable, *args: Any) -> Any:
        """Run a blocking engine method on the engine's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def agenerate(self, prompts: list, params: GenerationParams) -> list[list[Completion]]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((prompts, params, future))
        if self.draining is None or self.draining.done():
            self.draining = asyncio.create_task(self._drain())
        return await future

    def _take_group(self) -> list[Request]:
        first = self.pending.pop(0)
        if not mergeable(first[1]):
            return [first]
        group = [first] + [r for r in self.pending if r[1] == first[1]]
        self.pending = [r for r in self.pending if r[1] != first[1]]
        return group

    async def _drain(self) -> None:
        while self.pending:
            group = self._take_group()
            prompts = [p for request in group for p in request[0]]
            try:
                results = await self.call(self.engine.generate, prompts, group[0][1])
            except Exception as exc:  # every caller in the batch gets the error
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.merged_batches += len(group) > 1
            start = 0
            for request_prompts, _, future in group:
                if not future.done():
                    future.set_result(results[start : start + len(request_prompts)])
                start += len(request_prompts)
