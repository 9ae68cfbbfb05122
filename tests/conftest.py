"""Shared fixtures. ``../shared`` exists on the team's machines and in CI, not in a user's
clone, so tests that read it skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"

# Set by `make test` where the CPU install route put vLLM in .venv: vLLM tests must run there,
# so "vLLM is not installed" becomes a failure instead of a skip.
REQUIRE_VLLM = os.environ.get("SELFEVO_REQUIRE_VLLM") == "1"

# The demo config cut to CI size: one round of 24 prompts x 2, 32 meta examples, 24 eval
# problems, 3 training steps, and short critiques (a 3-step model's critique runs on to the
# limit; used by the end-to-end run, resume, ablation and job-submit tests).
REDUCED_DEMO = [
    "sampling.feedback_max_new_tokens=64",
    "recipe.rounds=1",
    "data.prompts_per_round=24",
    "data.meta_examples=32",
    "eval.num_problems=24",
    "eval.sc_samples=2",
    "train.max_steps=3",
    "train.micro_batch_size=4",
]


@pytest.fixture(scope="session")
def reduced_demo() -> list[str]:
    return list(REDUCED_DEMO)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"{data} is absent (only the team's machines and CI have ../shared)")
    return data


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with a char tokenizer and no chat template, saved to disk."""
    from actors.models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory) -> Path:
    """The same tiny Llama, with a chat template in its tokenizer."""
    from actors.models import CHATML_TEMPLATE, build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny-chat-llama"), chat_template=CHATML_TEMPLATE
    )


@pytest.fixture(scope="session")
def varied_model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny Llamas (different seeds) whose random weights give varied text per prompt."""
    from actors.models import build_tiny_llama

    return tuple(
        build_tiny_llama(
            tmp_path_factory.mktemp(f"varied-{seed}"), initializer_range=0.3, seed=seed
        )
        for seed in (1, 2)
    )


def arithmetic_prompts(count: int, seed: int = 0) -> list[str]:
    """Prompts of varied length, so batches need real padding."""
    import random

    rng = random.Random(seed)
    return [
        f"What is {rng.randint(1, 999)} + {rng.randint(1, 999)}?" + " Think." * rng.randint(0, 8)
        for _ in range(count)
    ]
