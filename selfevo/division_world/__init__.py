"""The division world: a demo world where checking an answer is easier than producing it.

Problems share a number of things equally (``Mia shares 684 coins among 4 friends. How many
each?``). The answer is found by long division, a digit at a time, and checked by the
forward procedure: multiply the answer back and compare with the dividend, digit by digit
(:mod:`.oracle` shows the check). SELF's self-feedback can only help as far as checking is
easier, for the model, than producing; in the arithmetic world (:mod:`selfevo.demo_world`)
the critic re-derived the answer the way the model does and repeated its slips, and its
verdict line did not follow its working. Here the critic's verdict line judges
(``recipe.judge_by: verdict_line``), as in the paper.

The seed model (shipped in ``seed_checkpoint/``, rebuilt with ``selfevo demo seed --world
division``) stands in for a pretrained base model: it is taught both procedures of the world
as plain exercises (long division, and multiplication written as the check writes it) but
never a check or a refinement; meta-skill learning teaches those. The refinement the oracle
writes is the gold solution.

I-SHEEP's model writes new problems in the world's synthesis form
(:func:`.problems.composition_text`): it picks an answer and a divisor, multiplies them, and
states the division of the product in the wording of the few-shot list's last problem, so a
problem it writes has a whole answer whenever its multiplication is right. Its
self-assessment of quality is the check with a score (9 when the pairs agree, 2 otherwise).

Where this departs from SELF: the paper's tasks are GSM8K/SVAMP with a 7B+ model; this
world keeps the method and shrinks the task so that a whole run fits a laptop. It is
registered in :mod:`selfevo.tasks` like any other task, and imports only
:mod:`selfevo.task_api` of the registry.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from selfevo.division_world import oracle, problems
from selfevo.records import Record
from selfevo.task_api import CHAR_MODEL_TEMPLATES, BuiltinData, BuiltinModel, Task, first_line

SEED_CHECKPOINT = Path(__file__).resolve().parent / "seed_checkpoint"


def _oracle_critique(record: Record, response: str) -> tuple[str, str] | None:
    known = oracle.operands(record)
    return oracle.check(*known, response) if known is not None else None


def _false_alarm(record: Record, response: str) -> str | None:
    known = oracle.operands(record)
    if known is None:
        return None
    return oracle.false_alarm(*known, response, zlib.crc32(record.id.encode()))


def _assessment(record: Record, response: str) -> tuple[str, str] | None:
    known = oracle.operands(record)
    return oracle.assessment(*known, response) if known is not None else None


def _flawed_solution(record: Record) -> str | None:
    known = oracle.operands(record)
    return oracle.flawed_solution(*known) if known is not None else None


def _synthesis_target(record: Record, prompt: str) -> str | None:
    known = oracle.operands(record)
    if known is None:
        return None
    # The new problem reuses the wording of the list's last problem: what the model then
    # learns to pick is the numbers, and it copies the words from just above.
    examples = [line for line in prompt.splitlines() if line[:1].isdigit()]
    last = problems.strip_numbering(examples[-2]) if len(examples) > 1 else ""
    question = problems.reworded(last, *known) or record.prompt or ""
    return problems.composition_text(*known, question)


def _prompt_fields(record: Record, response: str | None) -> dict[str, str]:
    return {"equation": first_line(response)}


def _records(split: str, count: int, seed: int, start: int) -> list[Record]:
    return [p.to_record() for p in problems.make_problems(split, count, seed, start)]


def _heldout(split: str, count: int, seed: int, start: int) -> list[Record]:
    made = problems.make_problems("heldout", count, 0, start)
    return [p.to_record("builtin:division-heldout") for p in made]


WORLD = Task(
    name=problems.TASK,
    oracle_critique=_oracle_critique,
    false_alarm=_false_alarm,
    prompt_fields=_prompt_fields,
    assessment=_assessment,
    flawed_solution=_flawed_solution,
    prompt_record=problems.problem_record,
    problem_key=problems.problem_key,
    synthesis_target=_synthesis_target,
    synthesized_tasks=problems.composed_problems,
    templates=CHAR_MODEL_TEMPLATES,
    writes_warmups=True,
    strict_answers=True,
)
BUILTIN_DATA = (
    BuiltinData("builtin:division", _records),
    BuiltinData("builtin:division-heldout", _heldout, heldout=True),
)
BUILTIN_MODELS = (
    BuiltinModel(
        "builtin:division-seed",
        SEED_CHECKPOINT,
        rebuild=f"selfevo demo seed --world division --output {SEED_CHECKPOINT}",
        world="division",
        trainer="selfevo.division_world.seed_model",
    ),
)
