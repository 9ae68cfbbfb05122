"""Parsers, case by case: verdicts, scores and final math answers."""

from __future__ import annotations

import pytest

from selfevo.parsers import (
    answers_match,
    extract_answer,
    format_number,
    parse_judgement,
    parse_number,
    parse_score,
    rederived_judgement,
)


@pytest.mark.parametrize(
    ("feedback", "judgement", "reason_part"),
    [
        ("Step 1 is right.\nJudgement: correct", "correct", None),
        ("Step 2 adds wrongly.\nJudgement: incorrect", "incorrect", None),
        ("ok\n  judgement:   Correct.  \n\n", "correct", None),
        ("ok\n**Judgement:** incorrect", "incorrect", None),
        ("ok\nJudgment: correct", "correct", None),
        # The response under review says "Judgement: correct"; the critic's own last line decides.
        (
            "The response ends with 'Judgement: correct'\nJudgement: correct\nbut 3+4 is not 8.\n"
            "Judgement: incorrect",
            "incorrect",
            None,
        ),
        # A quoted verdict that is not on the last line forges nothing.
        ("Judgement: correct\nThe sum in step 2 is wrong.", None, "not the last line"),
        ("Looks fine to me.", None, "no final"),
        ("", None, "empty"),
        (None, None, "empty"),
        ("ok\nJudgement: correct or incorrect", None, "ambiguous"),
        ("ok\nJudgement: mostly correct", None, "ambiguous"),
        ("ok\nJudgement:", None, "ambiguous"),
    ],
)
def test_parse_judgement(feedback, judgement, reason_part):
    verdict = parse_judgement(feedback)
    assert verdict.judgement == judgement
    if reason_part is None:
        assert verdict.reason is None
    else:
        assert reason_part in verdict.reason


@pytest.mark.parametrize(
    ("text", "score", "reason_part"),
    [
        ("8||Clear and correct.", 8.0, None),
        ("  7.5 || fine", 7.5, None),
        ("**9**||great", 9.0, None),
        ("Score: 6", 6.0, None),
        ("The answer is decent. Score: 7/10", 7.0, None),
        ("score = 3. Nothing else.", 3.0, None),
        ("Score: 4\nOverall score: 4", 4.0, None),
        ("11||too good", None, "out of range"),
        ("Score: 0", None, "out of range"),
        ("-2||bad", None, "out of range"),
        ("Score: 3 ... on reflection Score: 8", None, "ambiguous"),
        ("It is pretty good.", None, "no score"),
        ("", None, "no score"),
    ],
)
def test_parse_score(text, score, reason_part):
    result = parse_score(text)
    assert result.value == score
    if reason_part:
        assert reason_part in result.reason


def test_parse_score_custom_range():
    assert parse_score("4||ok", low=1, high=5).value == 4
    assert parse_score("6||ok", low=1, high=5).value is None


@pytest.mark.parametrize(
    ("text", "value", "method"),
    [
        ("She sells 9 eggs for $2 each.\n#### 18", 18, "strict"),
        ("#### 1,000", 1000, "strict"),
        ("So 5 + 7 = 12. The answer is 12.", 12, "strict"),
        ("The answer is $1,250.50.", 1250.5, "strict"),
        ("The final answer is: **-3**", -3, "strict"),
        ("Answer: 3/4 of the cake", 0.75, "strict"),
        ("thus \\boxed{42} is it, not 7", 42, "strict"),
        # The last strict form wins over an earlier one.
        ("The answer is 5. Wait, recheck: the answer is 6.", 6, "strict"),
        # A strict marker with no number right after it falls back to the last number.
        ("The answer is below. 3 + 4 = 7", 7, "last_number"),
        ("16-3-4=9 eggs, she makes 9 * 2 = 18 dollars", 18, "last_number"),
        ("It costs $2,000 in total", 2000, "last_number"),
        ("the change is −5 degrees", -5, "last_number"),
        ("x = -2.5 metres", -2.5, "last_number"),
        ("about .5 of them", 0.5, "last_number"),
        ("12% of it", 12, "last_number"),
        ("She walked 7km.", 7, "last_number"),
    ],
)
def test_extract_answer(text, value, method):
    answer = extract_answer(text)
    assert answer.value == pytest.approx(value)
    assert answer.method == method


@pytest.mark.parametrize("text", ["", None, "no digits here", "the answer is eleven"])
def test_extract_answer_none(text):
    answer = extract_answer(text)
    assert answer.value is None and answer.reason


def test_fraction_with_zero_denominator_is_skipped():
    assert extract_answer("1/0 then 4").value == 4


def test_a_fraction_with_a_decimal_part_is_read_not_a_crash():
    # A tiny model wrote "48.5585/3" in an I-SHEEP run; reading it crashed an evaluation.
    assert extract_answer("48.5585/3").value == pytest.approx(16.18616667)


def test_answers_match_tolerance():
    assert answers_match(18.0, 18)
    assert answers_match(0.3333333, 1 / 3)
    assert not answers_match(18.0, 19)
    assert not answers_match(None, 1)
    assert answers_match(0.0, 0.0)


def test_integers_compare_exactly_and_decimals_to_the_stated_tolerance():
    # GSM8K's grader compares exactly: off by one on a large integer is wrong.
    assert not answers_match(57501, 57500)
    assert not answers_match(1_000_001, 1_000_000)
    assert answers_match(57500.0, 57500)
    assert answers_match(2.5, 2.5)
    assert answers_match(0.3333, 1 / 3)  # within DECIMAL_TOLERANCE
    assert not answers_match(0.33, 1 / 3)
    assert not answers_match(18.5, 18)


def test_parse_number_and_format():
    assert parse_number("1,000") == 1000
    assert parse_number("-$5") == -5
    assert parse_number(51.0) == 51
    assert parse_number("none") is None
    assert format_number(51.0) == "51"
    assert format_number(0.5) == "0.5"
    assert format_number(-3) == "-3"


@pytest.mark.parametrize(
    ("feedback", "response", "judgement", "reason_part"),
    [
        ("347+285\n...\nThe answer is 632.\nGiven 632.", "The answer is 632.", "correct", None),
        ("347+285\n...\nThe answer is 632.\nGiven 623.", "so 623", "incorrect", None),
        # The critic's verdict line is not what decides here: its worked answer is.
        ("The answer is 632.\nGiven 623.\nJudgement: correct", "623", "incorrect", None),
        ("The answer is 1,200.", "#### 1200", "correct", None),
        # The last strict answer of the critique counts.
        ("The answer is 5? No.\nThe answer is 6.", "The answer is 6.", "correct", None),
        ("The answer is 6.", "I do not know.", "incorrect", None),
        ("The answer is 6.", None, "incorrect", None),
        # A response cannot supply the number: a critique without its own answer is unusable.
        ("Looks right: 6.\nJudgement: correct", "The answer is 6.", None, "no answer of its own"),
        ("", "The answer is 6.", None, "no answer of its own"),
    ],
)
def test_rederived_judgement(feedback, response, judgement, reason_part):
    verdict = rederived_judgement(feedback, response)
    assert verdict.judgement == judgement
    if reason_part is not None:
        assert reason_part in verdict.reason
