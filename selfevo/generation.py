"""The engine contract, in plain data: what a generate call takes and what it gives back.

Every engine backend (Hugging Face, vLLM) takes rendered prompt texts and
:class:`GenerationParams`, and returns, per prompt, ``n`` :class:`Completion` objects. Keeping
these types here, free of torch, lets the pipeline's pure logic and its tests use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

STOP = "stop"  # the model ended the text (EOS or a stop string)
LENGTH = "length"  # cut at max_new_tokens


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def with_(self, **changes: Any) -> GenerationParams:
        return replace(self, **changes)

    @classmethod
    def from_config(cls, sampling: Any, **changes: Any) -> GenerationParams:
        """From a ``SamplingConfig`` (``feedback_max_new_tokens`` is the stages' business)."""
        params = cls(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            n=sampling.n,
            max_new_tokens=sampling.max_new_tokens,
            stop=tuple(sampling.stop),
            seed=sampling.seed,
        )
        return params.with_(**changes)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str = STOP


@dataclass
class EngineStats:
    """Counters an engine keeps; ``busy_seconds`` is time spent inside generate."""

    requests: int = 0
    prompts: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    busy_seconds: float = 0.0
    weights_version: int = 0
    sleeping: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
