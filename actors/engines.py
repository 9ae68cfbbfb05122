"""Picking and building an engine from the config.

``engine.backend: auto`` picks vLLM when it imports and a GPU is present, else the HF engine.
"""

from __future__ import annotations

import inspect
from typing import Any

from selfevo.config import SelfEvoConfig


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_backend(
    requested: str, *, vllm_ok: bool | None = None, gpu_ok: bool | None = None
) -> str:
    """``auto`` -> ``vllm`` when vLLM imports and a GPU is present, else ``hf``."""
    if requested != "auto":
        return requested
    if gpu_ok is None:
        gpu_ok = gpu_available()
    if not gpu_ok:  # no GPU: the HF engine, without paying for importing vLLM
        return "hf"
    if vllm_ok is None:
        from actors.engine_vllm import vllm_available

        vllm_ok = vllm_available()
    return "vllm" if vllm_ok else "hf"


def engine_kwargs(config: SelfEvoConfig, model_path: str | None = None) -> dict[str, Any]:
    """What :func:`build_engine` needs, as plain data that can travel to a Ray actor.

    ``backend`` stays as configured: ``auto`` is resolved by the engine actor, where it runs.
    LoRA serving is switched on when rounds train unmerged adapters.
    """
    engine, model, lora = config.engine, config.model, config.train.lora
    serves_adapters = lora.enabled and not lora.merge
    return {
        "backend": engine.backend.value,
        "model": model_path or model.name_or_path,
        "tokenizer": model.tokenizer,
        "dtype": model.dtype.value,
        "trust_remote_code": model.trust_remote_code,
        "max_batch_size": engine.max_batch_size,
        "kv_cache": engine.kv_cache.value,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "max_num_seqs": engine.max_num_seqs,
        "max_model_len": model.max_seq_len,
        "enable_sleep_mode": engine.enable_sleep_mode,
        "enable_lora": engine.enable_lora or serves_adapters,
        "max_lora_rank": max(engine.max_lora_rank, lora.r if serves_adapters else 0),
        "enforce_eager": engine.enforce_eager,
        "cpu_kvcache_gib": engine.cpu_kvcache_gib,
        "num_threads": engine.cpu_threads or max(1, int(engine.cpus_per_engine)),
        "seed": config.run.seed,
    }


def build_engine(backend: str, **kwargs: Any) -> Any:
    """An engine instance; keyword arguments the backend's engine does not take are dropped."""
    if backend == "vllm":
        from actors.engine_vllm import VLLMEngine as engine_class
    elif backend == "hf":
        from actors.engine_hf import HFEngine as engine_class
    else:
        raise ValueError(f"unknown engine backend {backend!r}; expected hf or vllm")
    accepted = inspect.signature(engine_class).parameters
    return engine_class(**{k: v for k, v in kwargs.items() if k in accepted})
