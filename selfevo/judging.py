"""Pairwise judging, the pure part: the judge's verdict, both orders, win/tie/loss.

General-domain results (SELF's Vicuna and Evol-Instruct sets, I-SHEEP's AlpacaEval and
MT-Bench) compare two systems' answers with a judge model. Judges favour a position, so each
pair is judged twice, once with system A's answer first and once with it second. A win
counts only when both orders prefer the same system; when either order says tie, or the two
orders disagree, the pair is a tie. A judge that always says "first" therefore produces only
ties. The win rate counts a tie as half a win.

The verdict is MT-Bench's: ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie). Only the judge's *last*
marker counts, and markers and section delimiters inside the answers are defanged before the
judge sees them (:func:`judge_messages`), so an answer cannot forge a verdict or end its own
section early; a judgement without a marker is ``unparsed`` and counts as a tie, never as a
win.

Answer files are JSONL rows ``{"id", "output"}`` (what ``selfevo refine`` writes;
``response`` is accepted too); a bad line is an error naming the file, line and field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from selfevo.records import Message

A, B, TIE = "A", "B", "tie"
WIN, LOSS = "win", "loss"
_MARKER = re.compile(r"\[\[\s*([ABC])\s*\]\]")

JUDGE_PROMPT = (
    "Please act as an impartial judge and evaluate the two responses to the question below. "
    "Compare their helpfulness, relevance, accuracy and detail; do not let the order or the "
    "length of the responses decide. Explain briefly, then give your verdict on the last "
    'line: "[[A]]" if response A is better, "[[B]]" if response B is better, "[[C]]" for a '
    "tie.\n\n[Question]\n{question}\n\n[Response A]\n{first}\n[End of Response A]\n\n"
    "[Response B]\n{second}\n[End of Response B]"
)


def _defang(answer: str) -> str:
    """An answer as the judge is shown it: no verdict markers, no fake section ends."""
    answer = re.sub(r"\[\[\s*([ABC])\s*\]\]", r"[\1]", answer)
    return re.sub(r"\[\s*(End of )?(Response [AB]|Question)\s*\]", r"(\1\2)", answer, flags=re.I)


def judge_messages(question: str, first: str, second: str) -> list[Message]:
    """The judge's prompt for one order of one pair."""
    text = JUDGE_PROMPT.format(question=question, first=_defang(first), second=_defang(second))
    return [Message("user", text)]


class AnswerFileError(ValueError):
    pass


def read_answers(path: str | Path) -> dict[str, str]:
    """``id -> output`` from a JSONL answer file; raises AnswerFileError naming the line."""
    path = Path(path)
    answers: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnswerFileError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise AnswerFileError(f"{where}: expected an object with 'id' and 'output'")
        if not isinstance(row.get("id"), (str, int)):
            raise AnswerFileError(f"{where}: field 'id' must be a string or integer")
        output = row.get("output", row.get("response"))
        if not isinstance(output, str):
            raise AnswerFileError(f"{where}: field 'output' must be a string")
        if str(row["id"]) in answers:
            raise AnswerFileError(f"{where}: id {row['id']!r} appears twice")
        answers[str(row["id"])] = output
    return answers


def parse_preference(judgement: str | None) -> str | None:
    """``A``, ``B`` or ``tie`` from the judge's last verdict marker; None without one."""
    markers = _MARKER.findall(judgement or "")
    if not markers:
        return None
    return {"A": A, "B": B, "C": TIE}[markers[-1]]


def combine(first_order: str | None, swapped_order: str | None) -> str:
    """System A's outcome from two verdicts: A's answer first, then A's answer second.

    In the swapped order, the judge's ``A`` is system B. Unparsed verdicts count as ties.
    """
    swapped_back = {A: B, B: A}.get(swapped_order or TIE, TIE)
    first = first_order or TIE
    if first == swapped_back == A:
        return WIN
    if first == swapped_back == B:
        return LOSS
    return TIE


@dataclass(frozen=True)
class PairwiseSummary:
    wins: int
    ties: int
    losses: int
    unparsed: int  # verdicts without a marker (each made its pair a tie)

    @property
    def total(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> float:
        """(wins + ties / 2) / pairs; 0.5 means no difference."""
        return (self.wins + 0.5 * self.ties) / self.total if self.total else 0.0


def summarize(verdict_pairs: Iterable[tuple[str | None, str | None]]) -> PairwiseSummary:
    """Win/tie/loss of system A over pairs of (first-order, swapped-order) verdicts."""
    counts = {WIN: 0, TIE: 0, LOSS: 0}
    unparsed = 0
    for first, swapped in verdict_pairs:
        unparsed += (first is None) + (swapped is None)
        counts[combine(first, swapped)] += 1
    return PairwiseSummary(counts[WIN], counts[TIE], counts[LOSS], unparsed)
