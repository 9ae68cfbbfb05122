"""Templates and rendering (the plain layout; the chat-template path runs in integration)."""

from __future__ import annotations

import pytest

from selfevo.records import Message, Record
from selfevo.templates import (
    DEFAULT_TEMPLATES,
    PLAIN_GENERATION_HEADER,
    answer_messages,
    build_messages,
    get_template,
    render_prompt,
    render_training_example,
    template_fields,
)

REQUIRED = [
    "answer",
    "feedback",
    "refine",
    "assess_quality",
    "assess_following",
    "synthesize",
    "mistake_induce",
    "mistake_analyze_guided",
    "mistake_analyze",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_every_template_exists_and_fills(name):
    fields = template_fields(name)
    messages = build_messages(name, **{f: f"<{f}>" for f in fields})
    assert messages[-1].role == "user"
    for f in fields:
        assert f"<{f}>" in messages[-1].content


@pytest.mark.parametrize("name", ["feedback", "feedback_math"])
def test_feedback_templates_ask_for_the_verdict_line(name):
    assert '"Judgement: correct"' in DEFAULT_TEMPLATES[name]
    assert '"Judgement: incorrect"' in DEFAULT_TEMPLATES[name]


@pytest.mark.parametrize("name", ["assess_quality", "assess_following"])
def test_assessment_templates_ask_for_score_form(name):
    assert "score||reason" in DEFAULT_TEMPLATES[name]


def test_task_specific_variant_is_picked():
    assert get_template("feedback", task="math") == DEFAULT_TEMPLATES["feedback_math"]
    assert get_template("feedback", task="poetry") == DEFAULT_TEMPLATES["feedback"]


def test_missing_field_and_unknown_names():
    with pytest.raises(KeyError, match="needs field 'response'"):
        build_messages("feedback", question="q")
    with pytest.raises(KeyError, match="unknown template"):
        get_template("nope")
    with pytest.raises(KeyError, match="unknown template set"):
        get_template("answer", template_set="nope")


def test_system_message_comes_first():
    messages = build_messages("answer", system="Be brief.", question="q")
    assert [m.role for m in messages] == ["system", "user"]


def test_answer_messages_for_text_and_chat_records():
    text = Record(id="a", prompt_id="a", prompt="2+2?", task="math")
    assert "The answer is N" in answer_messages(text)[0].content
    chat = Record(id="b", prompt_id="b", messages=[Message("user", "hi")])
    assert answer_messages(chat) == [Message("user", "hi")]


def test_plain_rendering_and_training_split_agree():
    messages = [Message("system", "Sys."), Message("user", "Q?")]
    prompt = render_prompt(messages)
    assert prompt == "Sys.\n\n### Request:\nQ?\n\n" + PLAIN_GENERATION_HEADER
    train_prompt, target = render_training_example(messages, "A.")
    assert train_prompt == prompt and target == "A."
