"""Pure parsers for model output: the critic's verdict, 1-10 scores, and final math answers.

Every parser returns a value or, when the text does not allow one, ``None`` with a reason,
which the pipeline turns into a rejected record. None of them raises on model output.

The verdict is read only from the final line the feedback template asks for
(``Judgement: correct`` / ``Judgement: incorrect``). A response under review that contains
"Judgement: correct" cannot forge the verdict, because the critic's own last line decides;
SELF's prompts look for the word anywhere in the critique, which a quoted response can trip.
:func:`rederived_judgement` is the other way to judge (``recipe.judge_by:
rederived_answer``): the critique's own worked answer against the response's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from selfevo.records import CORRECT, INCORRECT

# --- verdicts ----------------------------------------------------------------------------

_VERDICT_LINE = re.compile(
    r"^[\s*_#>]*judge?ment[\s*_]*:[\s*_]*(?P<value>[^\n]*?)[\s*_.!]*$", re.IGNORECASE
)


@dataclass(frozen=True)
class Verdict:
    judgement: str | None
    reason: str | None = None


def parse_judgement(feedback: str | None) -> Verdict:
    """The judgement from the last non-empty line of the critic's feedback.

    Returns:
        ``Verdict("correct")``, ``Verdict("incorrect")``, or ``Verdict(None, reason)`` when the
        last line is not a verdict line or its value is neither word.
    """
    lines = [line for line in (feedback or "").splitlines() if line.strip()]
    if not lines:
        return Verdict(None, "empty feedback")
    match = _VERDICT_LINE.match(lines[-1])
    if match is None:
        if any(_VERDICT_LINE.match(line) for line in lines[:-1]):
            return Verdict(None, "verdict line is not the last line")
        return Verdict(None, "no final 'Judgement: correct|incorrect' line")
    value = match.group("value").strip().lower()
    if value in (CORRECT, INCORRECT):
        return Verdict(value)
    shown = value if len(value) <= 40 else value[:37] + "..."
    return Verdict(None, f"ambiguous verdict '{shown}'")


def rederived_judgement(feedback: str | None, response: str | None) -> Verdict:
    """Judge a response by the answer the critique re-derives.

    The critique must state its own final answer in a strict form (``The answer is N``,
    ``#### N`` or ``\\boxed{N}``; the last one counts): ``correct`` when it equals the
    response's final answer, ``incorrect`` when it differs or the response has none. Only the
    critic's text yields the number it compares against, so a response cannot supply it.
    """
    own = extract_answer(feedback)
    if own.method != "strict":
        return Verdict(None, "the critique states no answer of its own ('The answer is N')")
    given = extract_answer(response).value
    return Verdict(CORRECT if answers_match(given, own.value) else INCORRECT)


# --- scores ------------------------------------------------------------------------------

_NUM = r"[-+]?\d+(?:\.\d+)?"
_PIPE_SCORE = re.compile(rf"^\s*\**\s*(?P<score>{_NUM})\s*\**\s*\|\|")
_LABELLED_SCORE = re.compile(
    rf"\bscore\s*\**\s*[:=]\s*\**\s*(?P<score>{_NUM})(?:\s*/\s*10\b)?", re.I
)


@dataclass(frozen=True)
class Score:
    value: float | None
    reason: str | None = None


def parse_score(text: str | None, low: float = 1, high: float = 10) -> Score:
    """A score written as ``N||why`` (on the first line) or ``Score: N`` (``N/10`` allowed).

    Several different ``Score:`` values are ambiguous; a value outside [low, high] is refused.
    """
    text = text or ""
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    pipe = _PIPE_SCORE.match(first_line)
    if pipe:
        values = {float(pipe.group("score"))}
    else:
        values = {float(m.group("score")) for m in _LABELLED_SCORE.finditer(text)}
    if not values:
        return Score(None, "no score in 'N||why' or 'Score: N' form")
    if len(values) > 1:
        return Score(None, f"ambiguous: several scores {sorted(values)}")
    value = values.pop()
    if not low <= value <= high:
        return Score(None, f"score {format_number(value)} out of range [{low}, {high}]")
    return Score(value)


# --- math answers ------------------------------------------------------------------------

# A number not glued to a word or a preceding digit: "16-3" is 16 and 3, "x=-5" is -5.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-−–])?\s?\$?\s?"
    r"(?P<body>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)"
)
_STRICT_MARKERS = [
    re.compile(r"####"),
    re.compile(r"\\boxed\{"),
    re.compile(r"(?:final\s+)?answer\s*(?:is|:|=)", re.IGNORECASE),
]
# What may stand between a strict marker and its number: "The answer is: **$18**".
_LEAD = re.compile(r"[\s*:=\\({\[]*")


@dataclass(frozen=True)
class Answer:
    value: float | None
    method: str | None = None  # "strict" | "last_number"
    reason: str | None = None
    fraction: bool = False  # written as a/b


def _number_value(match: re.Match) -> float | None:
    body = match.group("body").replace(",", "")
    if "/" in body:
        numerator, denominator = (Fraction(part) for part in body.split("/"))
        if denominator == 0:
            return None
        value = float(numerator / denominator)  # "8.5/2" as a model may write it
    else:
        value = float(body)
    return -value if match.group("sign") else value


def parse_number(text: str | float | int | None) -> float | None:
    """The first number in ``text`` ("1,000", "-$5", "3/4", "12.5 kg"), or None."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _NUMBER.search(text or "")
    return _number_value(match) if match else None


def extract_answer(text: str | None) -> Answer:
    """The final numeric answer of a solution.

    Strict forms win (the last ``#### N``, ``\\boxed{N}`` or ``The answer is N`` in the text);
    otherwise the last number in the text; otherwise None with a reason.
    """
    text = text or ""
    best_end, best_value, best_fraction = -1, None, False
    for marker in _STRICT_MARKERS:
        for found in marker.finditer(text):
            start = _LEAD.match(text, found.end()).end()
            number = _NUMBER.match(text[start : start + 40])
            if number is not None and found.start() > best_end:
                value = _number_value(number)
                if value is not None:
                    best_end, best_value = found.start(), value
                    best_fraction = "/" in number.group("body")
    if best_value is not None:
        return Answer(best_value, "strict", fraction=best_fraction)
    numbers = [v for v in (_number_value(m) for m in _NUMBER.finditer(text)) if v is not None]
    if numbers:
        return Answer(numbers[-1], "last_number")
    return Answer(None, None, "no number in the output")


def final_answer(text: str | None, strict: bool = False) -> Answer:
    """:func:`extract_answer`, or with ``strict`` only a stated number (``The answer is N``;
    neither the text's last number nor a fraction ``a/b``, which may restate the question)."""
    answer = extract_answer(text)
    if strict and (answer.method != "strict" or answer.fraction):
        return Answer(None, None, "no stated final answer ('The answer is N')")
    return answer


def given_answer(response: str | None, strict: bool = False) -> str:
    """A response's final answer as a critic is shown it (``none`` when it has none)."""
    value = final_answer(response or "", strict).value
    return format_number(value) if value is not None else "none"


# Decimal answers ("2.5", "1/3" written as "0.3333") match within this absolute tolerance.
DECIMAL_TOLERANCE = 1e-4


def answers_match(predicted: float | None, gold: float | None) -> bool:
    """Integers compare exactly (as GSM8K's grader does); decimals within DECIMAL_TOLERANCE.

    A relative tolerance would call 57501 right for a gold of 57500.
    """
    if predicted is None or gold is None:
        return False
    if float(predicted).is_integer() and float(gold).is_integer():
        return int(predicted) == int(gold)
    return abs(predicted - gold) <= DECIMAL_TOLERANCE


def format_number(value: float | int) -> str:
    """51.0 -> "51", 0.5 -> "0.5": how golds and answers are written back as text."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.6g}"
