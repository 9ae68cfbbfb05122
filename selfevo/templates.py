"""Prompt templates and the single function that turns messages into model text.

Templates are written in our own words. SELF's feedback prompt asks for a critique that ends
in a verdict; ours fixes the verdict to one final line, ``Judgement: correct`` or
``Judgement: incorrect``, which :func:`selfevo.parsers.parse_judgement` reads and nothing
else. I-SHEEP's self-assessment asks for ``score||reason``; so does ours, once for quality
and once for instruction following.

:func:`render_prompt` (generation) and :func:`render_training_example` (fine-tuning) share
one path: the tokenizer's chat template when the model has one, else a plain-text layout.
So a model is trained on exactly the text it is later prompted with.
"""

from __future__ import annotations

import string
from dataclasses import asdict
from typing import Any, Protocol

from selfevo.records import Message, Record
from selfevo.tasks import task_named

VERDICT_INSTRUCTION = (
    'Then end with one final line that reads exactly "Judgement: correct" or '
    '"Judgement: incorrect", and nothing after it.'
)

DEFAULT_TEMPLATES: dict[str, str] = {
    "answer": "{question}",
    "answer_math": (
        "{question}\n\n"
        "Work through the problem one step at a time, showing each calculation. "
        "Finish with a last line of the form: The answer is N."
    ),
    "feedback": (
        "Here is a request and a response to it.\n\n"
        "Request:\n{question}\n\nResponse:\n{response}\n\n"
        "Review the response point by point: is it accurate, complete and does it do what was "
        "asked? Name each problem you find. " + VERDICT_INSTRUCTION
    ),
    "feedback_math": (
        "Here is a math problem and a proposed solution.\n\n"
        "Problem:\n{question}\n\nProposed solution:\n{response}\n\n"
        "Check the solution one step at a time: redo every calculation yourself and say "
        "whether the final number follows from the steps. " + VERDICT_INSTRUCTION
    ),
    "refine": (
        "Request:\n{question}\n\nEarlier response:\n{response}\n\n"
        "Review of the earlier response:\n{feedback}\n\n"
        "Write a new response that fixes every problem the review names. "
        "Give only the new response."
    ),
    "refine_math": (
        "Problem:\n{question}\n\nEarlier solution:\n{response}\n\n"
        "Review of the earlier solution:\n{feedback}\n\n"
        "Write a corrected solution, one step at a time, fixing what the review found. "
        "Finish with a last line of the form: The answer is N."
    ),
    "assess_quality": (
        "Rate the quality of a response to an instruction.\n\n"
        "Instruction:\n{question}\n\nResponse:\n{response}\n\n"
        "Consider correctness, helpfulness, clarity and detail. Give a score from 1 (useless) "
        "to 10 (excellent) on one line, as score||reason, for example: 7||Correct but terse."
    ),
    "assess_following": (
        "Rate how well a response follows its instruction.\n\n"
        "Instruction:\n{question}\n\nResponse:\n{response}\n\n"
        "Does it do exactly what was asked, in the form that was asked? Give a score from 1 "
        "(ignores the instruction) to 10 (follows it fully) on one line, as score||reason."
    ),
    # Self-Instruct's layout: numbered tasks, ending at the next number for the model to fill.
    "synthesize": "Come up with a series of diverse tasks, one per line.\n{examples}",
    "mistake_induce": (
        "{question}\n\n"
        "For a training exercise, write a response to the request above that looks "
        "plausible but contains a clear mistake or does something it should not."
    ),
    "mistake_analyze_guided": (
        "Request:\n{question}\n\nResponse:\n{response}\n\n"
        "This response is flawed. Explain what is wrong with it, why it is a problem, and "
        "what a good response would do instead."
    ),
    "mistake_analyze": (
        "Request:\n{question}\n\nResponse:\n{response}\n\n"
        "Analyse this response: is anything wrong with it, why, and what would a good "
        "response do instead?"
    ),
}

TEMPLATE_SETS: dict[str, dict[str, str]] = {"default": DEFAULT_TEMPLATES}


# Plain-text layout for models without a chat template (base models, the demo's char model).
PLAIN_ROLE_HEADERS = {"system": "", "user": "### Request:\n", "assistant": "### Response:\n"}
PLAIN_GENERATION_HEADER = PLAIN_ROLE_HEADERS["assistant"]


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer that rendering needs (no import of transformers)."""

    chat_template: str | None
    eos_token: str | None

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def template_fields(name: str, template_set: str = "default") -> set[str]:
    """The ``{fields}`` a template needs."""
    text = get_template(name, template_set)
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def get_template(name: str, template_set: str = "default", task: str | None = None) -> str:
    """The template ``name`` for a record of ``task``: the set's task-specific variant
    ``name_task`` when it has one (``feedback_math``), else the task's own (a registered task's
    templates, :mod:`selfevo.tasks`), else the set's ``name``."""
    if template_set not in TEMPLATE_SETS:
        raise KeyError(f"unknown template set {template_set!r}; known: {sorted(TEMPLATE_SETS)}")
    templates = TEMPLATE_SETS[template_set]
    if task and f"{name}_{task}" in templates:
        return templates[f"{name}_{task}"]
    task_own = task_named(task).templates if task else {}
    if name in task_own:
        return task_own[name]
    if name not in templates:
        raise KeyError(f"unknown template {name!r}; known: {sorted(templates)}")
    return templates[name]


def build_messages(
    name: str,
    *,
    task: str | None = None,
    template_set: str = "default",
    system: str | None = None,
    **fields: str,
) -> list[Message]:
    """Fill a template and wrap it as a chat (optional system message, then the user turn)."""
    template = get_template(name, template_set, task)
    try:
        content = template.format(**fields)
    except KeyError as exc:
        raise KeyError(f"template {name!r} needs field {exc.args[0]!r}") from None
    messages = [Message("system", system)] if system else []
    return [*messages, Message("user", content)]


def answer_messages(record: Record, template_set: str = "default") -> list[Message]:
    """The generation prompt for a record: its own chat, or the answer template around its text."""
    if record.messages is not None:
        return list(record.messages)
    return build_messages(
        "answer", task=record.task, template_set=template_set, question=record.prompt
    )


def _as_dicts(messages: list[Message]) -> list[dict[str, str]]:
    return [asdict(m) if isinstance(m, Message) else dict(m) for m in messages]


def _has_chat_template(tokenizer: ChatTokenizer | None) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def _plain_text(messages: list[Message]) -> str:
    parts = []
    for message in messages:
        body = message.content.strip()
        parts.append(f"{PLAIN_ROLE_HEADERS[message.role]}{body}\n\n")
    return "".join(parts)


def render_prompt(messages: list[Message], tokenizer: ChatTokenizer | None = None) -> str:
    """The exact text a model is prompted with for ``messages``.

    With a chat template: ``apply_chat_template(..., add_generation_prompt=True)``. Without:
    the plain layout, ending in the response header the model continues from.
    """
    if _has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            _as_dicts(messages), tokenize=False, add_generation_prompt=True
        )
    return _plain_text(messages) + PLAIN_GENERATION_HEADER


def render_training_example(
    messages: list[Message], target: str, tokenizer: ChatTokenizer | None = None
) -> tuple[str, str]:
    """Split a training example into (prompt text, target text) with prompt + target = full text.

    The prompt text is exactly :func:`render_prompt`'s, so training and inference agree; the
    target text is the response followed by whatever closes a turn (the chat template's end
    of turn, else the tokenizer's EOS token): what the model learns to stop on.
    """
    prompt = render_prompt(messages, tokenizer)
    eos = getattr(tokenizer, "eos_token", None) or ""
    if _has_chat_template(tokenizer):
        conversation = [*_as_dicts(messages), {"role": "assistant", "content": target}]
        full = tokenizer.apply_chat_template(conversation, tokenize=False)
        # A template that rewrites earlier turns once an answer follows (some drop reasoning
        # blocks) no longer extends the prompt; then fall back to target + EOS.
        if full.startswith(prompt):
            return prompt, full[len(prompt) :]
    return prompt, target + eos
