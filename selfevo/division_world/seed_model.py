"""The division world's seed model: a tiny Llama taught the world's arithmetic from scratch,
as plain exercises in equal parts: long division on ``seed``-split problems; multiplication
of a three- or four-digit number by a digit, column by column (``Multiply 171 by 4.``); and
comparing two numbers digit by digit (``Compare 684 and 694.``), written as the check writes
them. A pretrained model knows how to multiply and compare; using them to check an answer,
and refining, are left to meta-skill learning (the seed never sees a check or a verdict).
Stopped at ``target_acc`` held-out division accuracy by
:func:`actors.seed_training.train_seed`."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfevo.division_world.problems import (
    DIVISORS,
    QUOTIENTS,
    TASK,
    digit_pairs,
    make_problems,
    multiplication_text,
)
from selfevo.records import Record


def multiplication_exercises(count: int, seed: int) -> list[tuple[Record, str]]:
    rng = random.Random(f"division:multiply:{seed}")
    exercises = []
    for index in range(count):
        factor, digit = rng.choice(QUOTIENTS), rng.choice(DIVISORS)
        record = Record(
            id=f"multiply-{seed}-{index}",
            prompt_id=f"multiply-{seed}-{index}",
            prompt=f"Multiply {factor} by {digit}.",
            task=TASK,
            gold=str(factor * digit),
        )
        exercises.append((record, multiplication_text(factor, digit)))
    return exercises


def comparison_exercises(count: int, seed: int) -> list[tuple[Record, str]]:
    """Two numbers the size of a dividend, the same a third of the time, otherwise one or two
    digits apart or unrelated; compared as the check compares a product with a dividend."""
    rng = random.Random(f"division:compare:{seed}")
    exercises = []
    for index in range(count):
        first = rng.choice(QUOTIENTS) * rng.choice(DIVISORS)
        kind = rng.random()
        if kind < 1 / 3:
            second = first
        elif kind < 0.85:
            digits = list(str(first))
            for place in rng.sample(range(len(digits)), k=rng.choice((1, 1, 2))):
                digits[place] = str((int(digits[place]) + rng.randint(1, 9)) % 10)
            second = int("".join(digits))
        else:
            second = rng.choice(QUOTIENTS) * rng.choice(DIVISORS)
        padded_first, padded_second, pairs = digit_pairs(first, second)
        verdict = "the same" if first == second else "different"
        record = Record(
            id=f"compare-{seed}-{index}",
            prompt_id=f"compare-{seed}-{index}",
            prompt=f"Compare {first} and {second}.",
            task=TASK,
        )
        exercises.append(
            (record, f"={padded_first}\n{padded_second}\n{pairs}\nThey are {verdict}.")
        )
    return exercises


def train_seed(
    output: str | Path,
    *,
    problems: int = 15000,
    steps: int = 3000,
    target_acc: float = 0.4,
    multiply_target_acc: float = 0.95,
    seed: int = 0,
    emit: Callable[[str], None] = print,
    **options: Any,
) -> dict[str, Any]:
    """Train the seed model in two stages: multiplications and comparisons until it
    multiplies ``multiply_target_acc`` of fresh exercises right (a pretrained model knows its
    tables), then divisions, multiplications and comparisons in equal parts until
    ``target_acc`` held-out division accuracy; at most ``steps`` steps each (``options``: more
    of the shared loop's)."""
    from actors.seed_training import train_seed as train

    forward = [*multiplication_exercises(problems, seed), *comparison_exercises(problems, seed)]
    fresh = [record for record, _ in multiplication_exercises(300, seed + 1000)]
    multiply = train(
        output, forward, fresh, steps=steps, target_acc=multiply_target_acc, seed=seed,
        emit=emit, **{"eval_every": 50, **options},
    )  # fmt: skip
    divisions = [(p.to_record(), p.solution()) for p in make_problems("seed", problems, seed)]
    heldout = [p.to_record() for p in make_problems("heldout", 300)]
    divide = train(
        output, [*divisions, *forward], heldout, steps=steps, target_acc=target_acc, seed=seed,
        start_from=output, emit=emit, **{"eval_from": 0, **options},
    )  # fmt: skip
    info = {**divide, "stages": {"multiply": multiply, "divide": divide}}
    (Path(output) / "seed_info.json").write_text(json.dumps(info, indent=2))
    return info
