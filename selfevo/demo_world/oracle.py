"""The demo world's oracle: the worked-solution critique, self-assessment texts and flawed
solutions it writes for its records (which carry their operands in ``meta``).

The critique the oracle writes (and the model learns to write) redoes the problem step by
step and compares: ``<worked solution>`` / ``Given 742.`` / ``Judgement: incorrect``. The
critic is shown the problem and the response's final answer, not every line of it. I-SHEEP's
and mistake analysis's warm-ups use the assessment and flawed-solution writers.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfevo.demo_world.problems import TASK, solution_lines, solution_text
from selfevo.parsers import given_answer
from selfevo.records import CORRECT, INCORRECT, Record
from selfevo.task_api import first_line


@dataclass(frozen=True)
class Check:
    """The oracle's verdict on one response, with the feedback text it writes."""

    judgement: str
    feedback: str


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
    equation, given = f"{a}{op}{b}", first_line(response)
    following = 9 if given == equation else 2
    return (
        f"{solution_text(a, b, op)}\nGiven {given_answer(response)}.\nScore: {quality}",
        f"{equation}\nGiven {given}.\nScore: {following}",
    )
