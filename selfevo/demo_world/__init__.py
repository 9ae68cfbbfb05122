"""The arithmetic demo world: word problems a tiny model can learn on a CPU, with a gold answer.

Problems add or subtract two three-digit numbers, dressed in a few sentence templates. The
solution format is written for a character-level model and is checkable line by line:

    Mia has 347 stamps and gets 285 more. How many stamps does she have now?
    347+285          <- the equation, read from the sentence
    7+5=2 c1         <- one column at a time, ones first, with carry (c1) or borrow (b1)
    4+8+1=3 c1
    3+2+1=6
    The answer is 632.

The critique the oracle labeler writes (and the model learns to write) redoes the problem
step by step and compares: ``<worked solution>`` / ``Given 742.`` / ``Judgement: incorrect``.
The critic is shown the problem and the response's final answer, not every line of it. The
demo judges by the critique's worked answer, not its verdict line (``recipe.judge_by:
rederived_answer``): a model this small re-derives well but writes a verdict that follows its
working less than half the time. Two earlier designs failed on the 2-core budget, and are
worth knowing: re-checking the response line by line ("7+5=2 c1 ok") taught a model this
small to copy the lines and say "ok" whatever they held (its verdict matched the base
rate); marking the critic's own steps ("> 7+5=2 c1") corrupted the answer format it had
learned. The refinement the oracle writes is the gold solution.

Splits are disjoint: the held-out problems never appear in the seed, meta-skill or prompt
pool sets. Where this departs from SELF: the paper's tasks are GSM8K/SVAMP with a 7B+ model;
this world keeps the method and shrinks the task so that a whole run fits a laptop.

The package holds the whole world: its problems (:mod:`.problems`), oracle (:mod:`.oracle`)
and seed model (:mod:`.seed_model`, shipped in ``seed_checkpoint/``); its templates are the
demo worlds' short forms (:data:`selfevo.task_api.CHAR_MODEL_TEMPLATES`). It is registered
in :mod:`selfevo.tasks` like any other task; no other module imports it, and it imports only
:mod:`selfevo.task_api` of the registry. The default demo is the division world
(:mod:`selfevo.division_world`), where checking is easier than solving; this one runs the
I-SHEEP and mistake-analysis demos (``conf/demo_arithmetic.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from selfevo.demo_world import oracle, problems
from selfevo.records import Record
from selfevo.task_api import CHAR_MODEL_TEMPLATES, BuiltinData, BuiltinModel, Task, first_line

SEED_CHECKPOINT = Path(__file__).resolve().parent / "seed_checkpoint"


def _oracle_critique(record: Record, response: str) -> tuple[str, str] | None:
    known = oracle.operands(record)
    if known is None:
        return None
    check = oracle.critique(*known, response)
    return check.judgement, check.feedback


def _assessment(record: Record, response: str) -> tuple[str, str] | None:
    known = oracle.operands(record)
    return oracle.assessment(*known, response) if known is not None else None


def _flawed_solution(record: Record) -> str | None:
    known = oracle.operands(record)
    return oracle.flawed_solution(*known) if known is not None else None


def _prompt_fields(record: Record, response: str | None) -> dict[str, str]:
    """The first line of a response, where the world's solutions write the equation."""
    return {"equation": first_line(response)}


def _records(split: str, count: int, seed: int, start: int) -> list[Record]:
    return [p.to_record() for p in problems.make_problems(split, count, seed, start)]


def _heldout(split: str, count: int, seed: int, start: int) -> list[Record]:
    return [p.to_record() for p in problems.make_problems("heldout", count, 0, start)]


WORLD = Task(
    name=problems.TASK,
    oracle_critique=_oracle_critique,
    prompt_fields=_prompt_fields,
    assessment=_assessment,
    flawed_solution=_flawed_solution,
    prompt_record=problems.problem_record,
    templates=CHAR_MODEL_TEMPLATES,
    writes_warmups=True,
)
BUILTIN_DATA = (
    BuiltinData("builtin:arithmetic", _records),
    BuiltinData("builtin:arithmetic-heldout", _heldout, heldout=True),
)
BUILTIN_MODELS = (
    BuiltinModel(
        "builtin:arithmetic-seed",
        SEED_CHECKPOINT,
        rebuild=f"selfevo demo seed --world arithmetic --output {SEED_CHECKPOINT}",
        world="arithmetic",
        trainer="selfevo.demo_world.seed_model",
    ),
)
