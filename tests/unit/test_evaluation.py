"""Held-out metrics, majority votes and self-filter quality against gold."""

import pytest

from selfevo.evaluation import (
    filter_quality,
    heldout_metrics,
    is_correct,
    judge_quality,
    majority_answer,
    vote,
)
from selfevo.records import Record


def _row(pid, k, gold, response, judgement=None, refined=None, status="pending", final=None):
    record = Record(
        id=f"{pid}#{k}",
        prompt_id=pid,
        prompt="q",
        gold=gold,
        sample_index=k,
        response=response,
        judgement=judgement,
        refined_response=refined,
    )
    record.status, record.final_response = status, final
    return record


def test_majority_answer_ties_go_to_the_earliest():
    assert majority_answer(["The answer is 3.", "The answer is 4.", "The answer is 4."]) == "4"
    assert majority_answer(["The answer is 3.", "The answer is 4."]) == "3"
    assert majority_answer(["no idea", None]) is None
    assert majority_answer(["The answer is 1,000.", "1000"]) == "1000"


def test_vote_groups_samples_by_prompt():
    rows = [
        _row("a", 0, "1", "The answer is 1."),
        _row("a", 1, "1", "The answer is 2."),
        _row("a", 2, "1", "The answer is 2."),
        _row("b", 0, "5", "The answer is 5."),
    ]
    assert vote(rows) == {"a": "2", "b": "5"}


def test_heldout_metrics_score_direct_refine_and_sc():
    refined = [
        _row("a", 0, "1", "The answer is 1.", "correct"),
        _row("b", 0, "2", "The answer is 3.", "incorrect", refined="The answer is 2."),
        _row("c", 0, "3", "The answer is 4.", "correct"),
        _row("d", 0, "4", "The answer is 5.", "incorrect", refined="The answer is 6."),
    ]
    sampled = [
        _row("a", 0, "1", "The answer is 1."),
        _row("a", 1, "1", "The answer is 1."),
        _row("b", 0, "2", "The answer is 2."),
        _row("b", 1, "2", "The answer is 9."),
        _row("c", 0, "3", "x"),
        _row("c", 1, "3", "y"),
        _row("d", 0, "4", "The answer is 4."),
        _row("d", 1, "4", "The answer is 4."),
    ]
    metrics = heldout_metrics(refined, sampled)
    assert metrics["direct"]["acc"] == 0.25 and metrics["refine"]["acc"] == 0.5
    assert metrics["refine_latest"] == metrics["refine"]
    assert metrics["sc"]["acc"] == 0.75 and metrics["sc_samples"] == 2
    low, high = metrics["direct"]["ci"]
    assert low < 0.25 < high
    assert metrics["judge"]["precision"] == 0.5 and metrics["judge"]["recall"] == 1.0
    assert "sc_refine" not in metrics


def test_sc_refine_votes_over_the_refined_samples():
    refined = [_row("a", 0, "1", "The answer is 1."), _row("b", 0, "2", "The answer is 2.")]
    sampled = [
        # a: both samples wrong; both refined, one right: the tie goes to the first sample's
        # refined answer, the right one.
        _row("a", 0, "1", "The answer is 7.", "incorrect", refined="The answer is 1."),
        _row("a", 1, "1", "The answer is 7.", "incorrect", refined="The answer is 8."),
        # b: right samples, one kept and one broken by its refinement; a wrong third.
        _row("b", 0, "2", "The answer is 2.", "correct"),
        _row("b", 1, "2", "The answer is 2.", "incorrect", refined="The answer is 5."),
        _row("b", 2, "2", "The answer is 5."),
    ]
    metrics = heldout_metrics(refined, sampled, with_refine=False, sc_refine=True)
    assert metrics["sc"]["acc"] == 0.5  # a votes 7, b votes 2
    assert metrics["sc_refine"]["acc"] == 0.5  # a votes 1, b votes 5 (2, 5, 5)
    a_only = heldout_metrics(refined[:1], sampled[:2], with_refine=False, sc_refine=True)
    assert (a_only["sc"]["acc"], a_only["sc_refine"]["acc"]) == (0.0, 1.0)


def test_filter_quality_compares_kept_with_all_answers():
    rows = [
        _row("a", 0, "1", "The answer is 1.", "correct", status="kept", final="The answer is 1."),
        _row(
            "b",
            0,
            "2",
            "The answer is 3.",
            "incorrect",
            refined="The answer is 2.",
            status="kept",
            final="The answer is 2.",
        ),
        _row("c", 0, "3", "The answer is 4.", "correct", status="kept", final="The answer is 4."),
        _row(
            "d",
            0,
            "4",
            "The answer is 5.",
            "incorrect",
            refined="The answer is 7.",
            status="rejected",
        ),
    ]
    quality = filter_quality(rows)
    assert quality["generated"] == 4 and quality["kept"] == 3
    assert quality["kept_acc"] == pytest.approx(2 / 3)
    assert quality["all_acc"] == 0.5  # a, b (refined) right; c, d wrong
    assert quality["first_answer_acc"] == 0.25
    judge = judge_quality(rows)
    assert judge["judged_correct"] == 2 and judge["precision"] == 0.5


def test_judge_agreement_counts_verdicts_the_gold_bears_out():
    rows = [
        _row("a", 0, "5", "The answer is 5.", "correct"),  # right, said correct
        _row("b", 0, "5", "The answer is 6.", "incorrect"),  # wrong, said incorrect
        _row("c", 0, "5", "The answer is 5.", "incorrect"),  # right, flagged
        _row("d", 0, "5", "The answer is 7.", "correct"),  # wrong, passed
        _row("e", 0, "5", "The answer is 5."),  # not judged: not counted
    ]
    judge = judge_quality(rows)
    assert judge["judged"] == 4 and judge["agreement"] == 0.5
    assert judge["precision"] == 0.5 and judge["recall"] == 0.5
    assert judge_quality(rows[4:])["agreement"] is None


def test_verdict_line_agreement_compares_stated_verdicts_with_judgements():
    rows = [_row(p, 0, "5", "The answer is 5.", "correct") for p in "abc"]
    rows[0].feedback = "The answer is 5.\nJudgement: correct"
    rows[1].feedback = "The answer is 5.\nJudgement: incorrect"  # says one thing, works another
    rows[2].feedback = "The answer is 5."  # no verdict line: not counted
    assert judge_quality(iter(rows))["verdict_line_agreement"] == 0.5
    assert judge_quality(rows[2:])["verdict_line_agreement"] is None


def test_no_gold_means_no_accuracy():
    row = Record(
        id="x",
        prompt_id="x",
        prompt="q",
        response="The answer is 1.",
        status="kept",
        final_response="The answer is 1.",
    )
    assert is_correct(row, row.response) is None
    quality = filter_quality([row])
    assert quality["kept_acc"] is None and quality["all_acc"] is None and quality["kept"] == 1


def test_accepted_refinement_keeps_the_first_answer_unless_the_critic_accepts_a_new_one():
    def refined_row(pid, refined_judgement):
        row = _row(pid, 0, "1", "The answer is 1.", "incorrect", refined="The answer is 7.")
        row.refined_judgement = refined_judgement
        return row

    # The critic wrongly rejects a right answer; its refinement is wrong. Only where the
    # critic accepts the refinement does "accepted" take it.
    rows = [refined_row("a", "incorrect"), refined_row("b", None), refined_row("c", "correct")]
    latest = heldout_metrics(rows, None, refine_answer="latest")
    accepted = heldout_metrics(rows, None, refine_answer="accepted")
    assert latest["refine"]["acc"] == 0.0
    assert accepted["refine"]["acc"] == pytest.approx(2 / 3)
    assert accepted["refine_latest"] == latest["refine"]
    # Votes over samples pick each sample's refined answer by the same policy.
    assert vote(rows[:1], refine_answer="accepted") == {"a": "1"}
    assert vote(rows[:1], refine_answer="latest") == {"a": "7"}
    with pytest.raises(ValueError, match="unknown refine answer policy"):
        heldout_metrics(rows, None, refine_answer="best")
