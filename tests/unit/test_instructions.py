"""Self-instruct rule filters (a table of cases with their reasons), ROUGE-L dedup, prompts."""

from __future__ import annotations

import random

import pytest

from selfevo.instructions import (
    Candidate,
    RougeDeduplicator,
    few_shot_prompt,
    filter_candidates,
    parse_generated_tasks,
    rule_reason,
)


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("Give three tips for staying healthy.", None),
        ("Summarize the following paragraph in one sentence.", None),
        ('"Translate" this phrase into French.', None),
        (None, "malformed_field: instruction is NoneType, not text"),
        (42, "malformed_field: instruction is int, not text"),
        ("   ", "empty_instruction"),
        ("Explain.", "too_short: 1 word(s) < 3"),
        ("word " * 151, "too_long: 151 words > 150"),
        ("Instruction: list five fruits", "template_marker: 'instruction:'"),
        ("### Rewrite this sentence politely", "template_marker: '###'"),
        ("Answer this <|im_start|> question now", "template_marker: '<|'"),
        ("Describe the image of a cat on a mat.", "needs_non_text: 'image'"),
        ("Draw a map of your neighbourhood.", "needs_non_text: 'draw'"),
        ("Compose a song and record the audio.", "needs_non_text: 'audio'"),
        ("Write a program that sorts a list.", "program_request"),
        ("- List three primary colours.", "bad_start: '-'"),
        ("Écris une phrase en français.", "bad_start: 'É'"),
        # Word boundaries: "mapping" and "profile" are text tasks.
        ("Explain the mapping between keys and values.", None),
        ("Write a short profile of a famous scientist.", None),
    ],
)
def test_rule_filters(instruction, reason):
    assert rule_reason(instruction) == reason


def test_word_bounds_come_from_the_caller():
    assert rule_reason("Name two rivers.", min_words=4) == "too_short: 3 word(s) < 4"
    assert rule_reason("Name two rivers please.", max_words=3) == "too_long: 4 words > 3"


def test_rouge_l_rejects_near_duplicates_of_seeds_and_of_this_round():
    seeds = [("seed-1", "Give three tips for staying healthy.")]
    candidates = [
        Candidate("g1", "Give three tips for staying healthy and fit."),  # near a seed
        Candidate("g2", "Name the capital city of every country in Europe."),
        Candidate("g3", "Name the capital city of each country in Europe."),  # near g2
        Candidate("g4", "Describe the image below."),  # rule first: never reaches dedup
        Candidate("g5", "Explain why the sky looks blue during the day."),
    ]
    decisions = filter_candidates(candidates, seeds, threshold=0.7)
    assert [d.id for d in decisions] == ["g1", "g2", "g3", "g4", "g5"]
    assert [d.accepted for d in decisions] == [False, True, False, False, True]
    # LCS 6 tokens; P = 6/8, R = 6/6: F = 2PR / (P + R) = 0.857.
    assert decisions[0].reason.startswith("near_duplicate: rougeL 0.86 > 0.7")
    assert decisions[0].reason.endswith("with seed-1")
    assert decisions[2].reason.endswith("with g2")
    assert decisions[3].reason == "needs_non_text: 'image'"


def test_rouge_l_score_is_the_library_f_measure():
    dedup = RougeDeduplicator([("k", "the cat sat on the mat")], threshold=0.7)
    score, match = dedup.closest("the cat sat on a mat")
    # LCS "the cat sat on mat" = 5 tokens of 6 each: P = R = F = 5/6.
    assert score == pytest.approx(5 / 6) and match == "k"
    assert dedup.admit("n", "the cat sat on a mat").startswith("near_duplicate")
    assert dedup.admit("m", "a dog ran in the park") is None
    assert ("m", "a dog ran in the park") in dedup.known


def test_the_threshold_is_strict():
    dedup = RougeDeduplicator([("k", "a b c d")], threshold=0.5)
    assert dedup.admit("x", "a b e f") is None  # F = 0.5, not above 0.5


def test_few_shot_prompt_mixes_seeds_and_generated_and_ends_at_the_next_number():
    seeds = [f"Seed task {i}." for i in range(20)]
    generated = ["Model task one.", "Model task two.", "Model task three."]
    prompt = few_shot_prompt(seeds, generated, random.Random(0), shots=8, from_generated=2)
    lines = prompt.splitlines()
    assert lines[-1] == "9."
    tasks = [line.split(". ", 1)[1] for line in lines[1:-1]]
    assert len(tasks) == 8 and sum(task.startswith("Model") for task in tasks) == 2


def test_parse_generated_tasks_keeps_numbered_continuations():
    text = " Name a fruit that is red.\n10. List two oceans.\nsome chatter\n11) Define gravity."
    assert parse_generated_tasks(text) == [
        "Name a fruit that is red.",
        "List two oceans.",
        "Define gravity.",
    ]
    assert parse_generated_tasks(None) == [] and parse_generated_tasks("  ") == []
