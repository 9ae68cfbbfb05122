"""Picking and building an engine from the config.

``engine.backend: auto`` picks vLLM when it imports and a GPU is present, else the HF engine.
"""

from __future__ import annotations

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
    if vllm_ok is None:
        from actors.engine_vllm import vllm_available

        vllm_ok = vllm_available()
    if gpu_ok is None:
        gpu_ok = gpu_available()
    return "vllm" if vllm_ok and gpu_ok else "hf"


def engine_kwargs(config: SelfEvoConfig, model_path: str | None = None) -> dict[str, Any]:
    """What :func:`build_engine` needs, as plain data that can travel to a Ray actor."""
    engine, model = config.engine, config.model
    return {
        "backend": choose_backend(engine.backend.value),
        "model": model_path or model.name_or_path,
        "tokenizer": model.tokenizer,
        "dtype": model.dtype.value,
        "trust_remote_code": model.trust_remote_code,
        "max_batch_size": engine.max_batch_size,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "max_num_seqs": engine.max_num_seqs,
        "max_model_len": model.max_seq_len,
        "enable_sleep_mode": engine.enable_sleep_mode,
        "enable_lora": engine.enable_lora,
        "max_lora_rank": engine.max_lora_rank,
        "seed": config.run.seed,
    }


def build_engine(backend: str, **kwargs: Any) -> Any:
    """An engine instance; keys a backend does not use are dropped."""
    if backend == "vllm":
        from actors.engine_vllm import VLLMEngine

        kwargs.pop("max_batch_size", None)
        kwargs.pop("num_threads", None)
        return VLLMEngine(**kwargs)
    if backend == "hf":
        from actors.engine_hf import HFEngine

        for key in (
            "tensor_parallel_size",
            "gpu_memory_utilization",
            "max_num_seqs",
            "max_model_len",
            "enable_sleep_mode",
            "enable_lora",
            "max_lora_rank",
            "seed",
        ):
            kwargs.pop(key, None)
        return HFEngine(**kwargs)
    raise ValueError(f"unknown engine backend {backend!r}; expected hf or vllm")
