"""The arithmetic world's seed model: a tiny Llama taught arithmetic from scratch on gold
question/solution pairs of the ``seed`` split (no feedback or refinement data), stopped at
50% held-out accuracy by :func:`actors.seed_training.train_seed`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfevo.demo_world.problems import make_problems


def train_seed(
    output: str | Path,
    *,
    problems: int = 4000,
    steps: int = 1500,
    target_acc: float = 0.5,
    seed: int = 0,
    emit: Callable[[str], None] = print,
    **options: Any,
) -> dict[str, Any]:
    """Train the seed model on ``problems`` problems until ``target_acc`` held-out accuracy or
    ``steps`` (``options``: more of the shared loop's)."""
    from actors.seed_training import train_seed as train

    examples = [(p.to_record(), p.solution()) for p in make_problems("seed", problems, seed=seed)]
    heldout = [p.to_record() for p in make_problems("heldout", 300)]
    return train(
        output,
        examples,
        heldout,
        steps=steps,
        target_acc=target_acc,
        seed=seed,
        emit=emit,
        **options,
    )
