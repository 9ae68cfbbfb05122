"""The Hugging Face engine: batched ``model.generate`` behind the selfevo engine contract.

Used on CPU machines (CI, laptops) and as a fallback on GPUs without vLLM. Prompts are sorted
by length and cut into batches of at most ``max_batch_size`` (length bucketing keeps padding
small), left-padded, and decoded together. Greedy results equal one-prompt-at-a-time
``model.generate``: padding is masked and position ids follow the mask.

On CPU the KV cache is static, allocated for each batch and written in place: the default
dynamic cache grows by concatenation, and copying it every step was half of decoding's time on
two CPU cores (``selfevo bench generate`` measures both). Unlike transformers' static cache,
its full-attention layers hand attention only the positions written so far, not the whole
allocation: on CPU, decoding the demo's batches of 128 is bound by reading the cache, and the
unwritten tail cost 15-24% of decoding's time (the same tokens either way). Sliding-window
and other layer kinds, BLOOM, and a static cache on CUDA keep transformers' layers. Elsewhere the
dynamic cache stays (on CUDA transformers would ``torch.compile`` the forward for a static
cache and compile again for every new batch shape), and so does it for models a static cache
does not fit: remote code, models without transformers' ``Cache``, and checkpoints whose
generation config names a cache of their own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer

from actors.models import encode_prompt, load_model, load_tokenizer
from selfevo.config import KVCache
from selfevo.generation import LENGTH, STOP, Completion, EngineStats, GenerationParams
from selfevo.records import Message
from selfevo.templates import render_prompt

Prompt = str | list[Message]
KV_CACHES = {kind.value for kind in KVCache}  # the config's choices
# Models whose generation code builds a full-length mask for any StaticCache (BLOOM's ALiBi
# bias): they keep transformers' static layers.
FULL_LENGTH_STATIC_MODELS = frozenset({"bloom"})


class EngineAsleepError(RuntimeError):
    pass


class HFEngine:
    """A causal LM that generates for many prompts at once.

    Args:
        model: hub name or local checkpoint directory.
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        max_batch_size: the most sequences decoded together.
        num_threads: torch CPU threads (None leaves torch's default).
        kv_cache: ``auto`` (static on CPU where the model takes it, else dynamic),
            ``static`` or ``dynamic``.
    """

    backend = "hf"

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        max_batch_size: int = 64,
        trust_remote_code: bool = False,
        num_threads: int | None = None,
        kv_cache: str = "auto",
    ):
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache={kv_cache!r}: expected one of {sorted(KV_CACHES)}")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = (
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.max_batch_size = max_batch_size
        self.kv_cache = kv_cache
        self.tokenizer = load_tokenizer(tokenizer or model, trust_remote_code)
        self.model = self._load(model)
        self.weights_source = model
        self.stats = EngineStats()
        self._asleep = False

    def _load(self, path: str) -> Any:
        return load_model(
            path, dtype=self.dtype, device=self.device, trust_remote_code=self.trust_remote_code
        )

    # --- generation -------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        return prompt if isinstance(prompt, str) else render_prompt(prompt, self.tokenizer)

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, in prompt order."""
        if self._asleep:
            raise EngineAsleepError(
                "the engine is asleep (training holds the device); wake it first"
            )
        started = time.perf_counter()
        encoded = [encode_prompt(self.tokenizer, self.render(p)) for p in prompts]
        results: list[list[Completion]] = [[] for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            for index, completions in zip(
                chunk, self._generate_batch([encoded[i] for i in chunk], params), strict=True
            ):
                results[index] = completions
        self._count(results, time.perf_counter() - started)
        return results

    def _generate_batch(
        self, batch: list[list[int]], params: GenerationParams
    ) -> list[list[Completion]]:
        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor(
            [[pad] * (width - len(ids)) + ids for ids in batch], device=self.device
        )
        attention = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=self.device
        )
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "num_return_sequences": params.n,
            "pad_token_id": pad,
            "do_sample": not params.greedy,
        }
        if self._static_cache():
            # A cache sized for this batch, not the one generate() keeps for a model's
            # cache_implementation="static": that one keeps the longest length any call has
            # needed. The written prefix is for CPU only: on CUDA (kv_cache="static")
            # transformers compiles the forward, and a key length growing each step would
            # recompile it.
            kwargs["past_key_values"] = batch_static_cache(
                self.model.config,
                max_cache_len=width + params.max_new_tokens,
                written_prefix=self.device == "cpu",
            )
        if not params.greedy:
            kwargs.update(
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None
            )
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        new_tokens = output[:, width:].tolist()
        completions = [self._completion(tokens, params) for tokens in new_tokens]
        return [
            [
                Completion(c.text, len(ids), c.output_tokens, c.finish_reason)
                for c in completions[i * params.n : (i + 1) * params.n]
            ]
            for i, ids in enumerate(batch)
        ]

    def _static_cache(self) -> bool:
        """Whether to decode with a static KV cache (asked each call: a weight load may bring
        another model)."""
        if self.kv_cache != "auto":
            return self.kv_cache == "static"
        model = self.model
        return (
            self.device == "cpu"
            and not model.is_custom_code()
            and getattr(model, "_supports_default_dynamic_cache", lambda: False)()
            and model.generation_config.cache_implementation is None
        )

    def _completion(self, tokens: list[int], params: GenerationParams) -> Completion:
        eos_ids = self._eos_ids()
        finish = LENGTH
        for position, token in enumerate(tokens):
            if token in eos_ids:
                tokens, finish = tokens[:position], STOP
                break
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        output_tokens = len(tokens) + (1 if finish == STOP else 0)
        for stop in params.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], STOP
        return Completion(text, 0, output_tokens, finish)

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set(eos) if isinstance(eos, list) else {eos}

    def _count(self, results: list[list[Completion]], seconds: float) -> None:
        self.stats.requests += 1
        self.stats.prompts += len(results)
        self.stats.prompt_tokens += sum(c[0].prompt_tokens for c in results if c)
        self.stats.output_tokens += sum(c.output_tokens for cs in results for c in cs)
        self.stats.busy_seconds += seconds

    # --- weights and memory -----------------------------------------------------------

    def load_weights(self, checkpoint_dir: str) -> int:
        """Reload the model in place from an HF checkpoint directory; returns the new version."""
        self.model = self._load(checkpoint_dir)
        self.weights_source = checkpoint_dir
        self.stats.weights_version += 1
        return self.stats.weights_version

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> int:
        """Take new weights from in-memory tensors (same architecture); returns the new version."""
        missing, unexpected = self.model.load_state_dict(tensors, strict=False)
        # Tied embeddings appear once in a state dict; anything else missing is an error.
        missing = [k for k in missing if k not in self._tied_keys()]
        if missing or unexpected:
            raise ValueError(
                f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        self.weights_source = "<in-memory>"
        self.stats.weights_version += 1
        return self.stats.weights_version

    def _tied_keys(self) -> set[str]:
        if getattr(self.model.config, "tie_word_embeddings", False):
            return {"lm_head.weight"}
        return set()

    def load_lora(self, adapter_dir: str, base: str | None = None) -> int:
        """Apply a peft LoRA adapter to the base weights and merge it (fast decoding after)."""
        from peft import PeftModel

        base_model = self._load(base or self.weights_source)
        self.model = PeftModel.from_pretrained(base_model, adapter_dir).merge_and_unload().eval()
        self.weights_source = f"{base or self.weights_source}+{Path(adapter_dir).name}"
        self.stats.weights_version += 1
        return self.stats.weights_version

    def sleep(self) -> None:
        """Free device memory for training: weights go to host memory (a no-op on CPU)."""
        if self.device.startswith("cuda"):
            self.model.to("cpu")
            torch.cuda.empty_cache()
        self._asleep = self.stats.sleeping = True

    def wake(self) -> None:
        if self.device.startswith("cuda"):
            self.model.to(self.device)
        self._asleep = self.stats.sleeping = False

    def get_stats(self) -> EngineStats:
        return self.stats

    def reset_stats(self) -> None:
        """Zero the counters; the weights version stays."""
        self.stats = EngineStats(weights_version=self.stats.weights_version)


class WrittenPrefixLayer(StaticLayer):
    """transformers' static full-attention layer, handing attention (and the mask) only the
    positions written so far."""

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        written = int(self.cumulative_length)
        return keys[:, :, :written], values[:, :, :written]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return int(self.cumulative_length) + query_length, 0


def batch_static_cache(config: Any, max_cache_len: int, *, written_prefix: bool) -> StaticCache:
    """transformers' static cache of ``max_cache_len`` positions; with ``written_prefix``, its
    plain full-attention layers become :class:`WrittenPrefixLayer` (sliding-window and
    linear-attention layers stay; a model with other static kinds keeps them all, as the
    masks of its layers must agree)."""
    cache = StaticCache(config=config, max_cache_len=max_cache_len)
    if not written_prefix or config.model_type in FULL_LENGTH_STATIC_MODELS:
        return cache
    if any(
        isinstance(layer, StaticLayer) and not layer.is_sliding and type(layer) is not StaticLayer
        for layer in cache.layers
    ):
        return cache
    cache.layers = [
        WrittenPrefixLayer(max_cache_len=layer.max_cache_len)
        if type(layer) is StaticLayer
        else layer
        for layer in cache.layers
    ]
    return cache


def generate_unbatched(engine: HFEngine, prompt: Prompt, max_new_tokens: int) -> Completion:
    """Greedy ``model.generate`` on one unpadded prompt: the reference batching must equal."""
    ids = torch.tensor(
        [encode_prompt(engine.tokenizer, engine.render(prompt))], device=engine.device
    )
    with torch.inference_mode():
        out = engine.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=engine.tokenizer.pad_token_id,
        )
    completion = engine._completion(out[0, ids.shape[1] :].tolist(), GenerationParams())
    completion.prompt_tokens = ids.shape[1]
    return completion
