"""The division world's problems: generated, split, solved and checked in the world's
format, and read back from model-written text.

A problem shares a whole number of things equally: ``a = q * d`` with a one-digit divisor
``d`` (2-9) and a quotient ``q`` of three or four digits (100-9999), 79,200 problems in all.
The space is that large on purpose: a tiny model trained on a few thousand problems of a
smaller one memorises them instead of learning the procedure, and then round prompts it has
not seen tell nothing. A tenth of the problems (by a hash of ``(q, d)``) is held out; the
seed, meta-skill and pool splits draw from the rest with their own random streams.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Hashable
from dataclasses import dataclass

from selfevo.records import Record
from selfevo.task_api import WrittenTask, prompt_text_key, template_pattern

TASK = "division"
SPLITS = ("seed", "meta", "pool", "heldout")
DIVISORS = range(2, 10)
QUOTIENTS = range(100, 10000)
# Checks compare the product and the dividend digit by digit at this width (the largest
# dividend, 9999 * 9, has five digits).
CHECK_WIDTH = 5

_NAMES = ("Mia", "Leo", "Ana", "Sam", "Kai", "Zoe", "Ben", "Ivy")
_ITEMS = ("stamps", "apples", "coins", "books", "shells", "cards", "beads", "pens")
_TEMPLATES = (
    "{name} shares {a} {item} among {d} friends. How many each?",
    "A shop packs {a} {item} into {d} equal boxes. How many per box?",
    "{name} splits {a} {item} into {d} equal piles. How many per pile?",
)


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    dividend: int
    divisor: int

    @property
    def answer(self) -> int:
        return self.dividend // self.divisor

    def solution(self) -> str:
        return solution_text(self.dividend, self.divisor)

    def to_record(self, source: str = "builtin:division") -> Record:
        return Record(
            id=self.id,
            prompt_id=self.id,
            prompt=self.question,
            task=TASK,
            source=source,
            gold=str(self.answer),
            meta=_meta(self.dividend, self.divisor),
        )


def _meta(dividend: int, divisor: int) -> dict[str, str]:
    return {
        "dividend": str(dividend),
        "divisor": str(divisor),
        "solution": solution_text(dividend, divisor),
    }


def equation(dividend: int, divisor: int) -> str:
    return f"{dividend}/{divisor}"


def solution_lines(dividend: int, divisor: int) -> list[str]:
    """Long division a digit at a time: ``28/4=7 r0`` brings down the next digit each line."""
    lines, remainder = [equation(dividend, divisor)], 0
    for digit in str(dividend):
        current = remainder * 10 + int(digit)
        lines.append(f"{current}/{divisor}={current // divisor} r{current % divisor}")
        remainder = current % divisor
    return [*lines, f"The answer is {dividend // divisor}."]


def solution_text(dividend: int, divisor: int) -> str:
    return "\n".join(solution_lines(dividend, divisor))


def product_lines(factor: int, divisor: int) -> tuple[list[str], int]:
    """``factor * divisor`` column by column, ones first, with the carry: ``7*4+2=0 c3``."""
    lines, carry = [f"{factor}*{divisor}"], 0
    for digit in reversed(str(factor)):
        total = int(digit) * divisor + carry
        plus = f"+{carry}" if carry else ""
        lines.append(f"{digit}*{divisor}{plus}={total % 10} c{total // 10}")
        carry = total // 10
    return lines, factor * divisor


def multiplication_text(factor: int, divisor: int) -> str:
    """The forward procedure on its own (the seed model's exercise): the columns, the answer."""
    lines, product = product_lines(factor, divisor)
    return "\n".join([*lines, f"The answer is {product}."])


_NUMBERING = re.compile(r"^\d+\s*[.)]\s*")


def strip_numbering(line: str) -> str:
    """A listed problem without its number (``3. Mia shares...`` -> ``Mia shares...``)."""
    return _NUMBERING.sub("", line.strip())


def composition_text(dividend: int, divisor: int, question: str) -> str:
    """How the world writes a new problem (I-SHEEP's synthesis): pick the answer and the
    divisor, multiply them (the forward procedure, in the check's columns), write the
    division that undoes it, then state that division as a problem, which has a whole answer
    only this way::

        171*4
        1*4=4 c0
        7*4=8 c2
        1*4+2=6 c0
        =684
        684/4
        Mia shares 684 coins among 4 friends. How many each?

    (The division line puts both numbers right above the problem: the tiny model copies
    from a few dozen characters back, not from the top of the columns.)
    """
    lines, _ = product_lines(dividend // divisor, divisor)
    return "\n".join([*lines, f"={dividend}", equation(dividend, divisor), question])


def composed_problems(continuation: str | None) -> list[WrittenTask] | None:
    """The problems in a synthesis continuation written as :func:`composition_text` does:
    each line after a product line (``=684``) and its division line (``684/4``). A problem
    whose numbers are not the division line's (``684``, then ``4``), or whose division line
    does not start from the product above it (``=684``, then ``648/4``), is flawed
    (``not_composed``): it does not pose the division the working built. Any other line,
    whatever it says, is a candidate (one that is no problem of the world counts against the
    synthesis). None for a continuation with no product line: it is not in this form (I-SHEEP
    then reads it as Self-Instruct's)."""
    lines = [line.strip() for line in (continuation or "").strip().splitlines()]
    if not any(line.startswith("=") for line in lines):
        return None
    return [
        WrittenTask(text, _composition_flaw(text, lines[i][1:], lines[i + 1]))
        for i, line in enumerate(lines[:-2])
        if line.startswith("=") and re.fullmatch(r"\d+/\d+", lines[i + 1])
        if (text := strip_numbering(lines[i + 2]))
    ]


def _composition_flaw(text: str, product: str, division: str) -> str | None:
    dividend, divisor = division.split("/")
    if dividend != product:
        return f"not_composed: divides {dividend}, not the product {product}"
    posed = re.findall(r"\d+", text)
    if posed == [dividend, divisor]:
        return None
    return f"not_composed: poses {' and '.join(posed) or 'no numbers'}, not {division}"


def digit_pairs(product: int, dividend: int) -> tuple[str, str, str]:
    """Both numbers zero-padded to one width, and their digits paired: ``6=6 1=1 7x8``."""
    width = max(CHECK_WIDTH, len(str(product)), len(str(dividend)))
    left, right = f"{product:0{width}d}", f"{dividend:0{width}d}"
    pairs = " ".join(f"{u}{'=' if u == v else 'x'}{v}" for u, v in zip(left, right, strict=True))
    return left, right, pairs


def split_of(quotient: int, divisor: int) -> str:
    """A fixed split for every (q, d): 10% held out, the rest shared by the other splits."""
    digest = hashlib.sha256(f"{quotient}/{divisor}".encode()).digest()
    return "heldout" if digest[0] < 26 else "train"


def make_problems(split: str, count: int, seed: int = 0, start: int = 0) -> list[Problem]:
    """``count`` problems of ``split``, deterministic in (split, seed, start); ``start`` skips
    that many problems of the stream (a fresh slice of the pool each round)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = random.Random(f"division:{split}:{seed}")
    wanted = "heldout" if split == "heldout" else "train"
    problems: list[Problem] = []
    index = 0
    while len(problems) < count:
        quotient, divisor = rng.choice(QUOTIENTS), rng.choice(DIVISORS)
        template, name, item = rng.choice(_TEMPLATES), rng.choice(_NAMES), rng.choice(_ITEMS)
        if split_of(quotient, divisor) != wanted:
            continue
        if index >= start:
            dividend = quotient * divisor
            question = template.format(name=name, item=item, a=dividend, d=divisor)
            problems.append(Problem(f"{split}-{seed}-{index}", question, dividend, divisor))
        index += 1
    return problems


# --- reading a (model-written) problem back -----------------------------------------


_FIELDS = {"name": "[A-Z][a-z]+", "item": "[a-z]+", "a": r"\d{1,6}", "d": r"\d{1,2}"}


_PATTERNS = [template_pattern(t, _FIELDS) for t in _TEMPLATES]


def parse_problem(question: str) -> tuple[int, int] | None:
    """(dividend, divisor) of a question in one of the world's templates whose divisor is one
    of the world's and divides the dividend exactly, else None.

    A model-written problem gets its gold answer this way, for scoring only: the method never
    sees it.
    """
    text = question.strip()
    for pattern in _PATTERNS:
        match = pattern.match(text)
        if match:
            dividend, divisor = int(match["a"]), int(match["d"])
            if divisor in DIVISORS and dividend % divisor == 0 and dividend > 0:
                return dividend, divisor
            return None
    return None


def reworded(question: str, dividend: int, divisor: int) -> str | None:
    """``question``'s wording (template, name, item) with other numbers; None when it is in
    none of the world's templates."""
    text = question.strip()
    for template, pattern in zip(_TEMPLATES, _PATTERNS, strict=True):
        match = pattern.match(text)
        if match:
            return template.format(**{**match.groupdict(), "a": dividend, "d": divisor})
    return None


def problem_key(record: Record) -> Hashable:
    """A division is the same problem in any wording: its dividend and divisor (a record that
    does not parse as one is known by its prompt)."""
    meta = dict(record.meta or {})
    try:
        return (TASK, int(meta["dividend"]), int(meta["divisor"]))
    except (KeyError, TypeError, ValueError):  # no numbers, or not whole ones: read the text
        known = parse_problem(record.question_text())
    return (TASK, *known) if known is not None else prompt_text_key(record)


def problem_record(question: str, record_id: str, source: str = "synthesized") -> Record:
    """A record for a (possibly model-written) question: with gold and solution when it
    parses as a problem of the world, as a plain prompt otherwise."""
    record = Record(id=record_id, prompt_id=record_id, prompt=question.strip(), task=TASK)
    record.source = source
    known = parse_problem(question)
    if known is not None:
        record.gold = str(known[0] // known[1])
        record.meta = _meta(*known)
    return record
