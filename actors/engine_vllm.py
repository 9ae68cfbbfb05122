"""The vLLM engine (vllm 0.33, GPU clusters), behind the same contract as the HF engine.

Written against vLLM 0.33's offline ``LLM`` API: tensor parallelism, sleep mode
(``sleep(level=1)`` / ``wake_up()``), LoRA requests, and in-place weight reload through
``collective_rpc`` on every tensor-parallel worker. vLLM is not installable on CPU machines, so
this module has not run in CI or on the team's CPU machines; its import is guarded and its
tests skip with that reason where vLLM is absent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from selfevo.generation import LENGTH, STOP, Completion, EngineStats, GenerationParams
from selfevo.records import Message
from selfevo.templates import render_prompt

try:  # vLLM is an optional extra: `pip install -e '.[vllm]'` on GPU machines.
    import vllm
    from vllm.lora.request import LoRARequest
except ImportError as exc:  # pragma: no cover - depends on the machine
    vllm = None
    VLLM_IMPORT_ERROR: str | None = str(exc)
else:  # pragma: no cover
    VLLM_IMPORT_ERROR = None


def vllm_available() -> bool:
    return vllm is not None


def _reload_from_safetensors(worker: Any, checkpoint_dir: str) -> int:
    """Runs inside each vLLM worker: stream a checkpoint's tensors into the live model."""
    from safetensors import safe_open

    model = worker.model_runner.model
    loaded = 0
    for path in sorted(Path(checkpoint_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt", device="cpu") as shard:
            names = list(shard.keys())
            model.load_weights((name, shard.get_tensor(name)) for name in names)
            loaded += len(names)
    return loaded


class VLLMEngine:
    """vLLM's offline engine with the selfevo engine contract."""

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
        trust_remote_code: bool = False,
        seed: int = 0,
    ):
        if vllm is None:
            raise RuntimeError(
                f"vLLM is not importable here ({VLLM_IMPORT_ERROR}); install the extra with "
                "`pip install -e '.[vllm]'` on a GPU machine, or set engine.backend=hf"
            )
        self.llm = vllm.LLM(
            model=model,
            tokenizer=tokenizer,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            enable_sleep_mode=enable_sleep_mode,
            enable_lora=enable_lora,
            max_lora_rank=max_lora_rank,
            trust_remote_code=trust_remote_code,
            seed=seed,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.weights_source = model
        self.stats = EngineStats()
        self._lora: Any = None
        self._asleep = False

    def render(self, prompt: str | list[Message]) -> str:
        return prompt if isinstance(prompt, str) else render_prompt(prompt, self.tokenizer)

    def generate(
        self, prompts: list[str | list[Message]], params: GenerationParams
    ) -> list[list[Completion]]:
        if self._asleep:
            raise RuntimeError("the engine is asleep (training holds the device); wake it first")
        started = time.perf_counter()
        sampling = vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
        )
        outputs = self.llm.generate(
            [self.render(p) for p in prompts], sampling, lora_request=self._lora, use_tqdm=False
        )
        results = [
            [
                Completion(
                    text=o.text,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    output_tokens=len(o.token_ids),
                    finish_reason=LENGTH if o.finish_reason == "length" else STOP,
                )
                for o in out.outputs
            ]
            for out in outputs
        ]
        self.stats.requests += 1
        self.stats.prompts += len(prompts)
        self.stats.output_tokens += sum(c.output_tokens for cs in results for c in cs)
        self.stats.busy_seconds += time.perf_counter() - started
        return results

    def load_weights(self, checkpoint_dir: str) -> int:
        """Reload weights in place on every TP worker; the KV cache is reset."""
        self.llm.collective_rpc(_reload_from_safetensors, args=(checkpoint_dir,))
        self.llm.reset_prefix_cache()
        self.weights_source = checkpoint_dir
        self.stats.weights_version += 1
        return self.stats.weights_version

    def load_lora(self, adapter_dir: str, base: str | None = None) -> int:
        """Serve later requests through this LoRA adapter (needs engine.enable_lora)."""
        self.stats.weights_version += 1
        self._lora = LoRARequest(Path(adapter_dir).name, self.stats.weights_version, adapter_dir)
        return self.stats.weights_version

    def load_state_dict(self, tensors: dict[str, Any]) -> int:
        def _load(worker: Any, items: list) -> None:
            worker.model_runner.model.load_weights(iter(items))

        self.llm.collective_rpc(_load, args=(list(tensors.items()),))
        self.llm.reset_prefix_cache()
        self.stats.weights_version += 1
        return self.stats.weights_version

    def sleep(self) -> None:
        self.llm.sleep(level=1)
        self._asleep = self.stats.sleeping = True

    def wake(self) -> None:
        self.llm.wake_up()
        self._asleep = self.stats.sleeping = False

    def get_stats(self) -> EngineStats:
        return self.stats
