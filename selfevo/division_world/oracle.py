"""The division world's oracle: the check it writes (and the model learns to write), the
self-assessment texts and the flawed solutions of I-SHEEP's and mistake analysis's warm-ups.

The check multiplies the answer under review back and compares the product with the
dividend digit by digit::

    684/4           <- the equation, read from the question
    171*4           <- the answer under review times the divisor, ones first with carries
    1*4=4 c0
    7*4=8 c2
    1*4+2=6 c0
    =00684          <- the product, zero-padded to five digits
    00684           <- the dividend, padded the same way
    0=0 0=0 6=6 8=8 4=4
    Judgement: correct

The verdict follows from the pairs: ``correct`` when every pair is ``=``. Why this form: a
tiny model that wrote ``684 vs 2177: differ`` was right about the product 98% of the time
and at chance on the comparison (comparing two numbers written apart is what it cannot do);
pairing the digits on one line makes each comparison local, and its verdict then agreed with
gold on 99.5% of its own answers (measured offline; the README has the figures).
"""

from __future__ import annotations

from selfevo.division_world.problems import (
    TASK,
    digit_pairs,
    equation,
    product_lines,
    solution_lines,
)
from selfevo.parsers import given_answer
from selfevo.records import CORRECT, INCORRECT, Record
from selfevo.task_api import first_line

# An answer with more digits than this cannot be a quotient of the world; its check says so
# instead of multiplying it out.
MAX_ANSWER_DIGITS = 6


def operands(record: Record) -> tuple[int, int] | None:
    """(dividend, divisor) of a division-world record, or None for a record from elsewhere."""
    meta = record.meta
    if record.task != TASK or not {"dividend", "divisor"} <= set(meta):
        return None
    return int(meta["dividend"]), int(meta["divisor"])


def check(dividend: int, divisor: int, response: str | None) -> tuple[str, str]:
    """``(judgement, feedback)``: the multiply-back check of ``response``'s final answer."""
    given = given_answer(response, strict=True)
    head = equation(dividend, divisor)
    if not given.isdigit():
        return INCORRECT, f"{head}\nNot a whole answer: {given}.\nJudgement: {INCORRECT}"
    if len(given) > MAX_ANSWER_DIGITS:
        return INCORRECT, f"{head}\nToo many digits: {given}.\nJudgement: {INCORRECT}"
    lines, product = product_lines(int(given), divisor)
    verdict = CORRECT if product == dividend else INCORRECT
    return verdict, _check_text(head, lines, product, dividend, verdict)


def _check_text(head: str, lines: list[str], product: int, dividend: int, verdict: str) -> str:
    """The check's lines: the equation, the columns, the product and the dividend as written,
    their digit pairs and the verdict."""
    padded_product, padded_dividend, pairs = digit_pairs(product, dividend)
    body = [head, *lines, f"={padded_product}", padded_dividend, pairs, f"Judgement: {verdict}"]
    return "\n".join(body)


def false_alarm(dividend: int, divisor: int, response: str | None, seed: int) -> str | None:
    """The check of a right answer with one slip that makes it judge the answer incorrect,
    as the model's own checks slip: the dividend copied with a wrong digit (``seed`` even) or
    one column's product digit wrong (odd); ``seed`` also picks the digit. None unless the
    response's answer is right.

    A refinement example on it, whose target keeps the answer, teaches the refiner that a
    flag can be wrong: trained only on real flags, it changed a right answer it was handed
    with a false one (12 of 35 in a two-round run).
    """
    given = given_answer(response, strict=True)
    if not given.isdigit() or int(given) * divisor != dividend:
        return None
    lines, product = product_lines(int(given), divisor)
    head = equation(dividend, divisor)
    if seed % 2 == 0:
        digits = str(dividend)
        at = (seed // 2) % len(digits)
        copied = digits[:at] + str((int(digits[at]) + 1) % 10) + digits[at + 1 :]
        return _check_text(head, lines, product, int(copied), INCORRECT)
    column = 1 + (seed // 2) % (len(lines) - 1)
    equation_part, carry = lines[column].rsplit(" ", 1)
    left, digit = equation_part.rsplit("=", 1)
    slipped = (int(digit) + 1) % 10
    lines[column] = f"{left}={slipped} {carry}"
    written = list(str(product))  # column k (ones first) wrote the product's k-th digit
    written[len(written) - column] = str(slipped)
    return _check_text(head, lines, int("".join(written)), dividend, INCORRECT)


def flawed_solution(dividend: int, divisor: int) -> str:
    """A long division with one slip: one step's quotient digit one too high (or low at 9),
    copied into the answer. The lines keep the solution's format."""
    lines = solution_lines(dividend, divisor)
    steps = lines[1:-1]
    digits = [int(step.split("=")[1].split(" ")[0]) for step in steps]
    slip = max(range(len(steps)), key=lambda i: (digits[i] > 0, i == len(steps) // 2))
    wrong_digit = digits[slip] + 1 if digits[slip] < 9 else digits[slip] - 1
    left, right = steps[slip].split("=")
    steps[slip] = f"{left}={wrong_digit} {right.split(' ')[1]}"
    digits[slip] = wrong_digit
    wrong = int("".join(map(str, digits)))
    return "\n".join([lines[0], *steps, f"The answer is {wrong}."])


def assessment(dividend: int, divisor: int, response: str | None) -> tuple[str, str]:
    """The oracle's (quality, following) self-assessment texts for a response: quality is the
    check with a score (9 right, 2 wrong); following compares the response's first line with
    the question's equation (9 the same, 2 not). Both end in ``Score: N``."""
    verdict, feedback = check(dividend, divisor, response)
    quality = 9 if verdict == CORRECT else 2
    checked = feedback.rsplit("\n", 1)[0]
    wanted, written = equation(dividend, divisor), first_line(response)
    following = 9 if written == wanted else 2
    return (
        f"{checked}\nScore: {quality}",
        f"{wanted}\nGiven {written}.\nScore: {following}",
    )
