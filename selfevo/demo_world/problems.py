"""The demo world's problems: generated, split, solved in the world's format, and read back
from model-written text. Splits are disjoint: the held-out problems never appear in the seed,
meta-skill or prompt-pool sets."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from selfevo.records import Record
from selfevo.task_api import template_pattern

TASK = "arithmetic"
SPLITS = ("seed", "meta", "pool", "heldout")

_NAMES = ("Mia", "Leo", "Ana", "Sam", "Kai", "Zoe", "Ben", "Ivy")
_ITEMS = ("stamps", "apples", "coins", "books", "shells", "cards", "beads", "pens")
_ADD_TEMPLATES = (
    "{name} has {a} {item} and gets {b} more. How many now?",
    "A shop sold {a} {item}, then {b} more. How many in all?",
    "{name} packs {a} {item} and {b} more. How many in total?",
)
_SUB_TEMPLATES = (
    "{name} has {a} {item} and gives away {b}. How many left?",
    "A shop had {a} {item} and sold {b}. How many remain?",
    "{name} needs {a} {item} and has {b}. How many more?",
)


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    a: int
    b: int
    op: str  # "+" or "-"

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    def solution(self) -> str:
        return solution_text(self.a, self.b, self.op)

    def to_record(self) -> Record:
        return Record(
            id=self.id,
            prompt_id=self.id,
            prompt=self.question,
            task=TASK,
            source="builtin:arithmetic",
            gold=str(self.answer),
            meta={"a": str(self.a), "b": str(self.b), "op": self.op, "solution": self.solution()},
        )


def _column_steps(a: int, b: int, op: str) -> list[str]:
    """One line per column, ones first: ``4+8+1=3 c1`` or ``3-8-1=4 b1``."""
    steps, carry = [], 0
    for place in range(3):
        da, db = a // 10**place % 10, b // 10**place % 10
        if op == "+":
            total = da + db + carry
            digit, out = total % 10, total >= 10
            flag = " c1" if out else ""
        else:
            total = da - db - carry
            digit, out = total % 10, total < 0
            flag = " b1" if out else ""
        carried = f"{op}{carry}" if carry else ""
        steps.append(f"{da}{op}{db}{carried}={digit}{flag}")
        carry = int(out)
    return steps


def solution_lines(a: int, b: int, op: str) -> list[str]:
    answer = a + b if op == "+" else a - b
    return [f"{a}{op}{b}", *_column_steps(a, b, op), f"The answer is {answer}."]


def solution_text(a: int, b: int, op: str) -> str:
    return "\n".join(solution_lines(a, b, op))


def _split_of(a: int, b: int, op: str) -> str:
    """A fixed split for every (a, b, op): 10% held out, the rest shared by the other splits."""
    digest = hashlib.sha256(f"{a}{op}{b}".encode()).digest()
    return "heldout" if digest[0] < 26 else "train"


def make_problems(split: str, count: int, seed: int = 0, start: int = 0) -> list[Problem]:
    """``count`` problems of ``split``, deterministic in (split, seed, start).

    ``heldout`` problems come from a fixed tenth of all (a, b, op) triples; the other splits
    draw from the rest, each with its own random stream, so they never meet the held-out set.
    ``start`` skips that many problems of the stream (a fresh slice of the pool each round).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = random.Random(f"{split}:{seed}")
    wanted = "heldout" if split == "heldout" else "train"
    problems: list[Problem] = []
    index = 0
    while len(problems) < count:
        op = rng.choice("+-")
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        if op == "-" and a < b:
            a, b = b, a
        template = rng.choice(_ADD_TEMPLATES if op == "+" else _SUB_TEMPLATES)
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        if _split_of(a, b, op) != wanted:
            continue
        if index >= start:
            question = template.format(name=name, item=item, a=a, b=b)
            problems.append(Problem(f"{split}-{seed}-{index}", question, a, b, op))
        index += 1
    return problems


# --- reading a (model-written) problem back -----------------------------------------


_FIELDS = {"name": "[A-Z][a-z]+", "item": "[a-z]+", "a": r"\d{1,4}", "b": r"\d{1,4}"}


_PATTERNS = [(template_pattern(t, _FIELDS), "+") for t in _ADD_TEMPLATES] + [
    (template_pattern(t, _FIELDS), "-") for t in _SUB_TEMPLATES
]


def parse_problem(question: str) -> tuple[int, int, str] | None:
    """(a, b, op) of a question written in one of the world's templates, else None.

    A model-written problem gets its gold answer this way, for scoring only: the method never
    sees it.
    """
    text = question.strip()
    for pattern, op in _PATTERNS:
        match = pattern.match(text)
        if match:
            return int(match["a"]), int(match["b"]), op
    return None


def problem_record(question: str, record_id: str, source: str = "synthesized") -> Record:
    """A record for a (possibly model-written) question: with operands and gold when it
    parses as a demo-world problem, as a plain prompt otherwise."""
    record = Record(id=record_id, prompt_id=record_id, prompt=question.strip(), task=TASK)
    record.source = source
    known = parse_problem(question)
    if known is not None:
        a, b, op = known
        record.gold = str(a + b if op == "+" else a - b)
        record.meta = {"a": str(a), "b": str(b), "op": op, "solution": solution_text(a, b, op)}
    return record
