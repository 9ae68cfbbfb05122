"""The demo world: arithmetic word problems a tiny model can learn on a CPU, with a gold answer.

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
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from selfevo.parsers import extract_answer, format_number
from selfevo.records import CORRECT, INCORRECT, Record

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


# --- the oracle --------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The oracle's verdict on one response, with the feedback text it writes."""

    judgement: str
    feedback: str


def given_answer(response: str | None) -> str:
    """A response's final answer as the critic is shown it (``none`` when it has none)."""
    value = extract_answer(response or "").value
    return format_number(value) if value is not None else "none"


def critique(a: int, b: int, op: str, response: str | None) -> Check:
    """The demo critic's feedback: solve the problem step by step, then compare answers.

    The critique is the worked solution, then ``Given X.`` (the answer under review, copied
    from the prompt) and the verdict line. A refinement can build on its steps.
    """
    given = given_answer(response)
    answer = a + b if op == "+" else a - b
    verdict = CORRECT if given == str(answer) else INCORRECT
    return Check(verdict, f"{solution_text(a, b, op)}\nGiven {given}.\nJudgement: {verdict}")


def operands(record: Record) -> tuple[int, int, str] | None:
    """(a, b, op) of a demo-world record, or None for a record from elsewhere."""
    meta = record.meta
    if record.task != TASK or not {"a", "b", "op"} <= set(meta):
        return None
    return int(meta["a"]), int(meta["b"]), meta["op"]


# --- the other recipes' demo-world skills ------------------------------------------------
# I-SHEEP's model writes new problems and scores answers; mistake analysis has it write a
# flawed solution and analyse one. The demo's tiny model learns these forms in a short
# warm-up on oracle-written examples (see selfevo.warmup); these functions write them.


def _template_pattern(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, group in (
        ("name", r"(?P<name>[A-Z][a-z]+)"),
        ("item", r"(?P<item>[a-z]+)"),
        ("a", r"(?P<a>\d{1,4})"),
        ("b", r"(?P<b>\d{1,4})"),
    ):
        pattern = pattern.replace(re.escape("{" + name + "}"), group)
    return re.compile(pattern + r"\s*$")


_PATTERNS = [(_template_pattern(t), "+") for t in _ADD_TEMPLATES] + [
    (_template_pattern(t), "-") for t in _SUB_TEMPLATES
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


def flawed_solution(a: int, b: int, op: str) -> str:
    """A worked solution with one plausible slip: a carry or borrow dropped where there is
    one, else one column's digit off by one. The lines stay in the solution's format."""
    lines = solution_lines(a, b, op)
    steps = lines[1:4]
    flagged = next((i for i, s in enumerate(steps) if s.endswith((" c1", " b1"))), None)
    digits = [int(s.split("=")[1][0]) for s in steps]
    if flagged is not None:  # forget to carry: the next column loses its +1/-1
        steps[flagged] = steps[flagged][:-3]
        if flagged + 1 < len(steps):
            nxt = steps[flagged + 1]
            left, right = nxt.split("=")
            left = left.removesuffix(f"{op}1")
            digit = (digits[flagged + 1] + (-1 if op == "+" else 1)) % 10
            steps[flagged + 1] = f"{left}={digit}{right[1:]}"
            digits[flagged + 1] = digit
    else:  # a slip in the tens column
        left, right = steps[1].split("=")
        digits[1] = (digits[1] + 1) % 10
        steps[1] = f"{left}={digits[1]}{right[1:]}"
    wrong = digits[0] + 10 * digits[1] + 100 * digits[2]
    return "\n".join([lines[0], *steps, f"The answer is {wrong}."])


def assessment(a: int, b: int, op: str, response: str | None) -> tuple[str, str]:
    """The oracle's (quality, following) self-assessment texts for a response.

    Quality redoes the problem and scores the given answer (9 right, 2 wrong); following
    checks that the response works on this problem, i.e. its first line is the question's
    equation (9 yes, 2 no). Both end in ``Score: N``, which :func:`parse_score` reads.
    """
    check = critique(a, b, op, response)
    quality = 9 if check.judgement == CORRECT else 2
    equation, given = f"{a}{op}{b}", response_equation(response)
    following = 9 if given == equation else 2
    return (
        f"{solution_text(a, b, op)}\nGiven {given_answer(response)}.\nScore: {quality}",
        f"{equation}\nGiven {given}.\nScore: {following}",
    )


def response_equation(response: str | None) -> str:
    """A response's first line (where the world's solutions write the equation)."""
    lines = (response or "").strip().splitlines()
    return lines[0].strip()[:20] if lines else "none"
