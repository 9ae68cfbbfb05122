"""Self-instruct prompt synthesis, the pure part: few-shot prompts, rule filters, ROUGE-L dedup.

I-SHEEP's first stage: the model writes new instructions from a few-shot prompt of seed tasks
and instructions it wrote earlier; each candidate then passes rule filters and a
near-duplicate check, as in Self-Instruct (Wang et al., 2023) and Alpaca. Every rejected
candidate keeps its reason, so a round accounts for all it generated.

Rule filters (in order, the first that fails names the reason):

* ``malformed_field`` - the instruction is not a string; ``empty_instruction`` - it is blank;
* ``too_short`` / ``too_long`` - outside the configured word bounds;
* ``template_marker`` - a leaked prompt marker ("Instruction:", "###", "<|", ...): the model
  copied the scaffolding instead of writing a task;
* ``needs_non_text`` - asks for something a text model cannot do (images, audio, files, ...);
* ``program_request`` - starts "Write a program" (Self-Instruct drops these: unverifiable);
* ``bad_start`` - starts with punctuation or a non-ASCII character.

A task's own synthesis form may flag a candidate first (``WrittenTask.flaw``, in
:mod:`selfevo.task_api`: a written problem that does not pose what its working composed, say);
the flaw is then its reason.

Near-duplicates: ROUGE-L F-measure (Google's ``rouge-score``) against every seed instruction
and every instruction accepted so far, this round's included; above the threshold is
``near_duplicate``, with the score and the id it matched.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Words for tasks a text-only model cannot do (Self-Instruct's list, plus audio and video).
NON_TEXT_WORDS = (
    "image", "images", "graph", "graphs", "picture", "pictures", "photo", "photos", "file",
    "files", "map", "maps", "draw", "plot", "video", "audio", "music", "flowchart", "diagram",
)  # fmt: skip
TEMPLATE_MARKERS = (
    "instruction:", "input:", "output:", "response:", "###", "<|", "|>", "[inst]", "[/inst]",
    "<s>", "</s>", "task:",
)  # fmt: skip
_NON_TEXT = re.compile(r"\b(" + "|".join(NON_TEXT_WORDS) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    id: str
    instruction: Any
    input: str = ""
    flaw: str | None = None  # the task's own form found it wanting (``reason: detail``)


@dataclass(frozen=True)
class Decision:
    id: str
    instruction: str
    accepted: bool
    reason: str | None = None  # why it was rejected


def rule_reason(instruction: Any, min_words: int = 3, max_words: int = 150) -> str | None:
    """The first rule filter ``instruction`` fails (``reason: detail``), or None."""
    if not isinstance(instruction, str):
        return f"malformed_field: instruction is {type(instruction).__name__}, not text"
    text = instruction.strip()
    if not text:
        return "empty_instruction"
    words = len(text.split())
    if words < min_words:
        return f"too_short: {words} word(s) < {min_words}"
    if words > max_words:
        return f"too_long: {words} words > {max_words}"
    lowered = text.lower()
    for marker in TEMPLATE_MARKERS:
        if marker in lowered:
            return f"template_marker: {marker!r}"
    match = _NON_TEXT.search(text)
    if match:
        return f"needs_non_text: {match.group(1).lower()!r}"
    if lowered.startswith("write a program"):
        return "program_request"
    if not text[0].isascii() or not (text[0].isalnum() or text[0] in "\"'("):
        return f"bad_start: {text[0]!r}"
    return None


class RougeDeduplicator:
    """Rejects instructions too close (ROUGE-L F) to any already known one."""

    def __init__(self, known: Iterable[tuple[str, str]], threshold: float):
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.threshold = threshold
        self.known: list[tuple[str, str]] = list(known)

    def closest(self, instruction: str) -> tuple[float, str | None]:
        best, best_id = 0.0, None
        for known_id, text in self.known:
            score = self._scorer.score(text, instruction)["rougeL"].fmeasure
            if score > best:
                best, best_id = score, known_id
        return best, best_id

    def admit(self, item_id: str, instruction: str) -> str | None:
        """None and remember it when new enough; else the ``near_duplicate`` reason."""
        score, match = self.closest(instruction)
        if score > self.threshold:
            return f"near_duplicate: rougeL {score:.2f} > {self.threshold} with {match}"
        self.known.append((item_id, instruction))
        return None


def filter_candidates(
    candidates: Sequence[Candidate],
    known: Iterable[tuple[str, str]],
    threshold: float,
    min_words: int = 3,
    max_words: int = 150,
) -> list[Decision]:
    """One decision per candidate, in order: rules first, then ROUGE-L against all known."""
    dedup = RougeDeduplicator(known, threshold)
    decisions = []
    for candidate in candidates:
        reason = candidate.flaw or rule_reason(candidate.instruction, min_words, max_words)
        text = candidate.instruction.strip() if isinstance(candidate.instruction, str) else ""
        if reason is None:
            reason = dedup.admit(candidate.id, text)
        decisions.append(Decision(candidate.id, text, reason is None, reason))
    return decisions


def few_shot_prompt(
    seeds: Sequence[str], generated: Sequence[str], rng: random.Random, shots: int = 8,
    from_generated: int = 2, task: str | None = None, template_set: str = "default",
) -> str:  # fmt: skip
    """A Self-Instruct style prompt: ``shots`` numbered tasks, up to ``from_generated`` of
    them model-written, ending at the next number for the model to continue (the
    ``synthesize`` template around them)."""
    from selfevo.templates import get_template

    take_generated = min(from_generated, len(generated))
    chosen = rng.sample(list(generated), take_generated)
    chosen += rng.sample(list(seeds), min(shots - take_generated, len(seeds)))
    rng.shuffle(chosen)
    lines = [f"{index}. {text}" for index, text in enumerate(chosen, start=1)]
    lines.append(f"{len(chosen) + 1}.")
    return get_template("synthesize", template_set, task).format(examples="\n".join(lines))


def parse_generated_tasks(text: str | None) -> list[str]:
    """The tasks a model wrote after a :func:`few_shot_prompt`: its first line, then any
    further numbered lines (``9. ...``). Unnumbered continuation lines are dropped."""
    lines = (text or "").strip().splitlines()
    if not lines:
        return []
    tasks = [lines[0].strip()]
    for line in lines[1:]:
        match = re.match(r"\s*\d+\s*[.)]\s*(.+)", line)
        if match:
            tasks.append(match.group(1).strip())
    return [task for task in tasks if task]
