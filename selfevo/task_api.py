"""What a task can add to the general machinery, and the registries it adds it to
(:mod:`selfevo.tasks` registers the tasks; a task's package imports only this module).

General code never names a task. Where it needs something only a task knows (an oracle's
worked critique, extra template fields, a warm-up's examples, built-in data sets or models),
it asks :func:`task_named` for the record's task and calls its hook; every hook has a default
that leaves the general behaviour in place, so a task that registers nothing (``math``,
``general``) behaves exactly as the general code does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from selfevo.records import Record


def _nothing(*args: object) -> None:
    return None


def _no_fields(record: Record, response: str | None) -> dict[str, str]:
    return {}


def prompt_text_key(record: Record) -> Hashable:
    """Two records pose the same problem when their prompts match, case and spacing aside."""
    return " ".join(record.question_text().lower().split())


@dataclass(frozen=True)
class WrittenTask:
    """A task read from a synthesis continuation in a task's own form, with the flaw that
    form shows (``reason: detail``), if any: the filter rejects it with that reason."""

    text: str
    flaw: str | None = None


@dataclass(frozen=True)
class Task:
    """A task's hooks. Each returns None (or nothing) for a record it cannot speak for.

    - ``oracle_critique(record, response)``: ``(judgement, feedback)`` the oracle labeler
      writes, instead of its answer-level check;
    - ``false_alarm(record, response)``: the oracle's check of a right ``response`` with a
      slip that makes it judge the response incorrect (how the model's own checks fail),
      for a refinement example that keeps the answer (:func:`selfevo.training.meta_examples`);
    - ``prompt_fields(record, response)``: extra ``{fields}`` for the task's templates;
    - ``assessment(record, response)``: the (quality, following) texts a self-assessment
      warm-up trains on;
    - ``flawed_solution(record)``: a plausible wrong solution, for mistake-analysis warm-ups;
    - ``prompt_record(text, id)``: a model-written prompt as a record of this task;
    - ``synthesis_target(record, prompt)``: what a synthesis warm-up teaches the model to
      write after the few-shot list of problems ``prompt``, for this record (default: its
      prompt, as Self-Instruct);
    - ``synthesized_tasks(continuation)``: the candidate prompts in a synthesis continuation
      written in that form (:class:`WrittenTask`, each with the flaw the
      form shows, if any), or None for one that is not (then, and for a task without the
      hook, :func:`selfevo.instructions.parse_generated_tasks` reads it);
    - ``problem_key(record)``: what identifies the problem a record poses (default: its
      prompt, case and spacing aside): I-SHEEP drops a written problem with the key of an
      evaluation problem;
    - ``templates``: template texts by name (``feedback``, ``refine``...), used for records
      of this task before the template set's own;
    - ``writes_warmups``: the hooks above can write a skill's warm-up;
    - ``strict_answers``: only a strict final answer (``The answer is N``) counts, never the
      last number of the text (a world whose working is full of numbers, ``684/4`` among
      them, would otherwise credit a response that only restates the question).
    """

    name: str
    oracle_critique: Callable[[Record, str], tuple[str, str] | None] = _nothing
    false_alarm: Callable[[Record, str], str | None] = _nothing
    prompt_fields: Callable[[Record, str | None], dict[str, str]] = _no_fields
    assessment: Callable[[Record, str], tuple[str, str] | None] = _nothing
    flawed_solution: Callable[[Record], str | None] = _nothing
    prompt_record: Callable[[str, str], Record] | None = None
    synthesis_target: Callable[[Record, str], str | None] = _nothing
    synthesized_tasks: Callable[[str | None], list[WrittenTask] | None] | None = None
    problem_key: Callable[[Record], Hashable] = prompt_text_key
    templates: Mapping[str, str] = field(default_factory=dict)
    writes_warmups: bool = False
    strict_answers: bool = False


@dataclass(frozen=True)
class BuiltinData:
    """A ``builtin:`` data set: ``make(split, count, seed, start)`` gives its records.

    A prompt pool is asked for the ``meta``, ``pool`` and ``seed`` splits; a ``heldout`` set
    gives its evaluation problems whatever the split, and cannot be a prompt pool.
    """

    name: str
    make: Callable[[str, int, int, int], list[Record]]
    heldout: bool = False


@dataclass(frozen=True)
class BuiltinModel:
    """A ``builtin:`` model: a checkpoint directory, how to rebuild it when missing, and the
    module whose ``train_seed(output, seed=, emit=, **options)`` trains it from scratch for
    ``selfevo demo seed --world WORLD``."""

    name: str
    path: Path
    rebuild: str = ""
    world: str = ""
    trainer: str = ""


# Short prompt forms for the demo worlds' character-level models, which learn them from their
# meta-skill data (the general templates are far longer than their context can use well).
CHAR_MODEL_TEMPLATES: dict[str, str] = {
    "answer": "{question}",
    # {answer} is the response's final answer, not all of it (the worlds' oracles say why).
    "feedback": "{question}\nCheck: {answer}",
    # The question comes last, next to where the refinement starts: the char model learned to
    # read operands a few dozen characters back, and misread them from the far end of a
    # critique (refinements copied "778+738" as "767+786").
    "refine": "Fix: {answer}\n{feedback}\n{question}",
    "assess_quality": "{question}\nRate: {answer}",
    "assess_following": "{question}\nForm: {equation}",
    "synthesize": "New problems:\n{examples}",
    "mistake_induce": "{question}\nMistake:",
    "mistake_analyze_guided": "{question}\nFlawed: {answer}",
    "mistake_analyze": "{question}\nCheck: {answer}",
}


def template_pattern(template: str, fields: Mapping[str, str]) -> re.Pattern:
    """A regex that matches ``template`` with each ``{field}`` replaced by its group pattern
    (how a world reads a model-written problem back)."""
    pattern = re.escape(template)
    for name, group in fields.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{group})")
    return re.compile(pattern + r"\s*$")


def first_line(response: str | None) -> str:
    """A response's first line, cut to 20 characters (where the demo worlds' solutions write
    the equation); ``none`` for an empty response."""
    lines = (response or "").strip().splitlines()
    return lines[0].strip()[:20] if lines else "none"


TASKS: dict[str, Task] = {}
BUILTIN_DATA: dict[str, BuiltinData] = {}
BUILTIN_MODELS: dict[str, BuiltinModel] = {}


def register(
    task: Task, data: tuple[BuiltinData, ...] = (), models: tuple[BuiltinModel, ...] = ()
) -> None:
    """Make a task, its built-in data sets and its built-in models known by name."""
    TASKS[task.name] = task
    BUILTIN_DATA.update({d.name: d for d in data})
    BUILTIN_MODELS.update({m.name: m for m in models})


def task_named(name: str | None) -> Task:
    """The registered task, or the general behaviour (a task with no hooks)."""
    return TASKS.get(name or "") or Task(name or "general")


def builtin_data(name: str) -> BuiltinData:
    if name not in BUILTIN_DATA:
        known = ", ".join(sorted(BUILTIN_DATA)) or "none"
        raise ValueError(f"unknown builtin data set {name!r}; known: {known}")
    return BUILTIN_DATA[name]


def builtin_model(name: str) -> BuiltinModel:
    if name not in BUILTIN_MODELS:
        known = ", ".join(sorted(BUILTIN_MODELS)) or "none"
        raise ValueError(f"unknown builtin model {name!r}; known: {known}")
    return BUILTIN_MODELS[name]


def resolve_model(name_or_path: str) -> str:
    """A ``builtin:`` model's checkpoint directory; any other name or path as given."""
    if not name_or_path.startswith("builtin:"):
        return name_or_path
    model = builtin_model(name_or_path)
    if not (model.path / "model.safetensors").is_file():
        hint = f"; rebuild it with `{model.rebuild}`" if model.rebuild else ""
        raise FileNotFoundError(
            f"the builtin model {name_or_path} is missing from {model.path}{hint}"
        )
    return str(model.path)
