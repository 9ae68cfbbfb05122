"""Shared fixtures. ``../shared`` exists on the team's machines and in CI, not in a user's
clone, so tests that read it skip cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"


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
