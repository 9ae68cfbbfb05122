"""A pool of long-lived engine actors shared by every stage of a round.

The pool is an async router actor in front of N engine actors. Each engine sits in its own
placement-group bundle (a TP-sized GPU bundle on clusters, a fraction of a CPU here). Stage
UDFs anywhere in the cluster call ``router.generate``; the router sends each request to the
engine with the fewest requests in flight; each engine actor takes many requests at once.
When an engine dies the router starts a new one in the same bundle, loads the current weights
into it (and puts it to sleep if the pool sleeps), and retries the call there: generation,
sleep, wake and weight loads alike, so a lost engine costs time but never a row or a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import defaultdict
from dataclasses import asdict
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.batching import RequestBatcher
from actors.engines import build_engine, choose_backend, engine_kwargs
from actors.models import check_model_source
from actors.placement import ENGINE_STRATEGY, engine_bundle, reserve
from selfevo.config import SelfEvoConfig
from selfevo.generation import Completion, GenerationParams
from selfevo.records import Message

log = logging.getLogger(__name__)
ROUTER_PREFIX = "selfevo-engines-"
ENGINE_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError)


@ray.remote
class EngineActor:
    """One engine (HF or vLLM) in its own process, taking many requests at once.

    ``engine.backend: auto`` is decided here, where the engine runs (vLLM when it imports and
    this process sees a GPU), not in the driver. vLLM batches concurrent requests itself; the HF
    engine gets them merged by a :class:`~actors.batching.RequestBatcher`, whose one thread
    also runs every blocking call (weight loads, sleep) so none lands mid-batch.
    """

    def __init__(self, kwargs: dict[str, Any]):
        kwargs = dict(kwargs)
        self.backend = choose_backend(kwargs.pop("backend"))
        self.engine = build_engine(self.backend, **kwargs)
        self.batcher = RequestBatcher(self.engine)

    async def generate(self, prompts: list, params: GenerationParams) -> list[list[Completion]]:
        if self.backend == "vllm":
            return await self.engine.agenerate(prompts, params)
        return await self.batcher.agenerate(prompts, params)

    async def load_weights(self, checkpoint_dir: str) -> int:
        return await self.batcher.call(self.engine.load_weights, checkpoint_dir)

    async def load_lora(self, adapter_dir: str, base: str | None = None) -> int:
        return await self.batcher.call(self.engine.load_lora, adapter_dir, base)

    async def load_state_dict(self, tensors: dict) -> int:
        return await self.batcher.call(self.engine.load_state_dict, tensors)

    async def sleep(self) -> None:
        await self.batcher.call(self.engine.sleep)

    async def wake(self) -> None:
        await self.batcher.call(self.engine.wake)

    async def stats(self) -> dict[str, Any]:
        stats = asdict(self.engine.get_stats())
        stats["extra"] = {**stats["extra"], "backend": self.backend, "pid": os.getpid()}
        return stats

    async def ping(self) -> bool:
        return True

    async def shutdown(self) -> None:
        """Stop the engine cleanly (vLLM's engine-core process with it)."""
        if hasattr(self.engine, "shutdown"):
            await self.batcher.call(self.engine.shutdown)

    async def reset_stats(self) -> None:
        """Zero the counters (benches measure from a warm engine); the weights version stays."""
        await self.batcher.call(self.engine.reset_stats)


@ray.remote
class EngineRouter:
    """Routes generate calls to the least busy engine and restarts engines that die."""

    def __init__(
        self,
        backend: str,
        kwargs: dict[str, Any],
        num_engines: int,
        bundle: dict[str, float],
        pg: Any,
        max_retries: int = 3,
    ):
        self.kwargs, self.bundle, self.pg = {**kwargs, "backend": backend}, bundle, pg
        self.max_retries = max_retries
        self.weights: tuple[str, ...] | None = None
        self.asleep = False
        self.restarts = 0
        self.progress: dict[str, int] = defaultdict(int)
        self.engines = [self._start(i) for i in range(num_engines)]
        # Per engine, the replay of weights and sleep state a replacement must finish before
        # it takes a call (a vLLM engine would otherwise answer with its starting weights).
        self.ready: list[asyncio.Future | None] = [None] * num_engines
        self.in_flight = [0] * num_engines

    def _start(self, index: int) -> Any:
        return EngineActor.options(
            num_cpus=self.bundle.get("CPU", 0),
            num_gpus=self.bundle.get("GPU", 0),
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=self.pg, placement_group_bundle_index=index
            ),
        ).remote(self.kwargs)

    async def _replay(self, engine: Any) -> None:
        if self.weights is not None:
            await getattr(engine, self.weights[0]).remote(*self.weights[1:])
        if self.asleep:
            await engine.sleep.remote()

    def _restart(self, index: int, dead: Any) -> None:
        if self.engines[index] is not dead:  # another request already replaced it
            return
        log.warning("engine %d died; starting a replacement", index)
        ray.kill(dead, no_restart=True)
        self.restarts += 1
        self.engines[index] = self._start(index)
        self.ready[index] = asyncio.ensure_future(self._replay(self.engines[index]))

    async def _engine(self, index: int) -> Any:
        """Engine ``index``, once any replacement has caught up with the pool's state."""
        engine, ready = self.engines[index], self.ready[index]
        if ready is not None:
            # If the replacement died too, the caller's call fails and restarts it.
            with contextlib.suppress(*ENGINE_FAILURES):
                await asyncio.shield(ready)
        return engine

    async def generate(
        self, prompts: list[str | list[Message]], params: GenerationParams
    ) -> list[list[Completion]]:
        last_error: Exception | None = None
        for _ in range(self.max_retries + 1):
            index = min(range(len(self.engines)), key=self.in_flight.__getitem__)
            self.in_flight[index] += 1
            engine = self.engines[index]
            try:
                engine = await self._engine(index)
                return await engine.generate.remote(prompts, params)
            except ENGINE_FAILURES as exc:
                last_error = exc
                self._restart(index, engine)
            finally:
                self.in_flight[index] -= 1
        raise RuntimeError(
            f"generate failed after {self.max_retries} engine restarts: {last_error}"
        )

    async def _broadcast(self, method: str, *args: Any) -> list[Any]:
        """Call ``method`` on every engine; an engine found dead is replaced and called again
        (a replacement already has the current weights and sleep state)."""
        return await asyncio.gather(
            *(self._call_engine(i, method, *args) for i in range(len(self.engines)))
        )

    async def _call_engine(self, index: int, method: str, *args: Any) -> Any:
        last_error: Exception | None = None
        for _ in range(self.max_retries + 1):
            engine = self.engines[index]
            try:
                engine = await self._engine(index)
                return await getattr(engine, method).remote(*args)
            except ENGINE_FAILURES as exc:
                last_error = exc
                self._restart(index, engine)
        raise RuntimeError(
            f"{method} failed after {self.max_retries} engine restarts: {last_error}"
        )

    async def describe(self) -> dict[str, Any]:
        """The pool's shape, with the backend the engines resolved (``auto`` is theirs)."""
        stats = await self._call_engine(0, "stats")
        return {
            "num_engines": len(self.engines),
            "backend": stats["extra"]["backend"],
            "max_num_seqs": self.kwargs.get("max_num_seqs"),
        }

    async def load_weights(self, checkpoint_dir: str) -> list[int]:
        self.weights = ("load_weights", checkpoint_dir)
        return await self._broadcast("load_weights", checkpoint_dir)

    async def load_lora(self, adapter_dir: str, base: str | None = None) -> list[int]:
        self.weights = ("load_lora", adapter_dir, base)
        return await self._broadcast("load_lora", adapter_dir, base)

    async def sleep(self) -> None:
        self.asleep = True
        await self._broadcast("sleep")

    async def wake(self) -> None:
        self.asleep = False
        await self._broadcast("wake")

    async def check_health(self, timeout_s: float = 30.0) -> int:
        """Ping every engine; restart the ones that do not answer. Returns how many."""
        restarted = 0
        for index, engine in enumerate(list(self.engines)):
            try:
                await asyncio.wait_for(engine.ping.remote(), timeout_s)
            except (asyncio.TimeoutError, *ENGINE_FAILURES):
                self._restart(index, engine)
                restarted += 1
        return restarted

    async def stats(self) -> dict[str, Any]:
        per_engine = await self._broadcast("stats")
        return {"engines": per_engine, "restarts": self.restarts}

    def report(self, stage: str, rows: int) -> None:
        self.progress[stage] += rows

    def reset_progress(self) -> None:
        self.progress.clear()

    def get_progress(self) -> dict[str, int]:
        return dict(self.progress)

    def engine_handles(self) -> list[Any]:
        return list(self.engines)

    def requests_in_flight(self) -> list[int]:
        """Generate calls each engine is serving now."""
        return list(self.in_flight)


class EnginePool:
    """The driver's handle on the router: place engines, generate, hand over weights, stop.

    Args:
        kwargs: engine arguments (see :func:`actors.engines.engine_kwargs`), incl. ``backend``.
        num_engines: engine actors to start.
        cpus_per_engine / gpus_per_engine: each engine's placement-group bundle.
    """

    def __init__(
        self,
        kwargs: dict[str, Any],
        num_engines: int = 1,
        cpus_per_engine: float = 0.5,
        gpus_per_engine: int = 0,
        ready_timeout_s: float = 600.0,
        name: str = "",
    ):
        kwargs = dict(kwargs)
        backend = kwargs.pop("backend")
        bundle = {"CPU": cpus_per_engine}
        if gpus_per_engine:
            bundle["GPU"] = gpus_per_engine
        bundles = [dict(bundle) for _ in range(num_engines)]
        self.pg = reserve(bundles, ENGINE_STRATEGY, "the engine pool", ready_timeout_s, name)
        # Named, so an operator (or a fault-injection test) can find the engines of a live run.
        self.router = EngineRouter.options(
            name=f"{ROUTER_PREFIX}{uuid.uuid4().hex[:8]}", num_cpus=0, max_concurrency=1000
        ).remote(backend, kwargs, num_engines, bundle, self.pg)
        self.num_engines = num_engines

    @classmethod
    def from_config(
        cls, config: SelfEvoConfig, model_path: str | None = None, name: str = ""
    ) -> EnginePool:
        """Checks the model exists (before any actor starts), then places and starts engines.

        ``name`` names the placement group; a group of that name left by a crashed run is
        removed first (see :func:`actors.placement.reserve`)."""
        engine = config.engine
        kwargs = engine_kwargs(config, model_path)
        check_model_source(kwargs["model"], kwargs["trust_remote_code"])
        gpus = int(engine_bundle(config).get("GPU", 0))
        return cls(kwargs, engine.num_engines, engine.cpus_per_engine, gpus, name=name)

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def generate(self, prompts: list, params: GenerationParams) -> list[list[Completion]]:
        return ray.get(self.router.generate.remote(prompts, params))

    def load_weights(self, checkpoint_dir: str) -> list[int]:
        return ray.get(self.router.load_weights.remote(checkpoint_dir))

    def load_lora(self, adapter_dir: str, base: str | None = None) -> list[int]:
        return ray.get(self.router.load_lora.remote(adapter_dir, base))

    def sleep(self) -> None:
        ray.get(self.router.sleep.remote())

    def wake(self) -> None:
        ray.get(self.router.wake.remote())

    def check_health(self) -> int:
        return ray.get(self.router.check_health.remote())

    def stats(self) -> dict[str, Any]:
        return ray.get(self.router.stats.remote())

    def wait_ready(self) -> None:
        """Block until every engine has loaded its model."""
        ray.get([e.ping.remote() for e in ray.get(self.router.engine_handles.remote())])

    def shutdown(self) -> None:
        engines = ray.get(self.router.engine_handles.remote())
        with contextlib.suppress(Exception):  # a dead or stuck engine is killed all the same
            ray.get([engine.shutdown.remote() for engine in engines], timeout=60)
        for engine in engines:
            ray.kill(engine)
        ray.kill(self.router)
        remove_placement_group(self.pg)
