"""The demo world: problems, solutions, the line-by-line oracle, and its splits."""

import pytest

from selfevo.demo_world import oracle
from selfevo.demo_world.oracle import critique
from selfevo.demo_world.problems import make_problems, solution_lines, solution_text
from selfevo.evaluation import is_correct
from selfevo.oracle import oracle_label
from selfevo.parsers import given_answer
from selfevo.records import CORRECT, INCORRECT, KEPT, REJECTED, Record


@pytest.mark.parametrize(
    ("a", "b", "op", "lines"),
    [
        (347, 285, "+", ["347+285", "7+5=2 c1", "4+8+1=3 c1", "3+2+1=6", "The answer is 632."]),
        (532, 285, "-", ["532-285", "2-5=7 b1", "3-8-1=4 b1", "5-2-1=2", "The answer is 247."]),
        (999, 999, "+", ["999+999", "9+9=8 c1", "9+9+1=9 c1", "9+9+1=9 c1", "The answer is 1998."]),
        (500, 499, "-", ["500-499", "0-9=1 b1", "0-9-1=0 b1", "5-4-1=0", "The answer is 1."]),
    ],
)
def test_solution_lines_do_column_arithmetic(a, b, op, lines):
    assert solution_lines(a, b, op) == lines


def test_every_solution_ends_in_the_right_answer():
    for problem in make_problems("seed", 300):
        assert is_correct(problem.to_record(), problem.solution())
        assert problem.answer == (
            problem.a + problem.b if problem.op == "+" else problem.a - problem.b
        )
        assert problem.answer >= 0


def test_splits_are_disjoint_and_deterministic():
    heldout = make_problems("heldout", 500)
    assert heldout == make_problems("heldout", 500)
    held_keys = {(p.a, p.b, p.op) for p in heldout}
    for split in ("seed", "meta", "pool"):
        others = make_problems(split, 2000)
        assert not held_keys & {(p.a, p.b, p.op) for p in others}, split
    assert make_problems("pool", 10, start=10) == make_problems("pool", 20)[10:]
    assert {p.id for p in make_problems("pool", 10)}.isdisjoint(
        {p.id for p in make_problems("pool", 10, start=10)}
    )
    with pytest.raises(ValueError, match="unknown split"):
        make_problems("train", 1)


def test_critique_redoes_the_problem_and_compares_answers():
    solution = solution_text(347, 285, "+")
    right = critique(347, 285, "+", solution)
    assert right.judgement == CORRECT
    assert right.feedback == solution + "\nGiven 632.\nJudgement: correct"
    wrong = critique(347, 285, "+", "347+285\n7+5=2 c1\n4+8+1=4 c1\n3+2+1=7\nThe answer is 742.")
    assert wrong.judgement == INCORRECT
    assert wrong.feedback == solution + "\nGiven 742.\nJudgement: incorrect"
    assert critique(347, 285, "+", "no number here").feedback.splitlines()[-2] == "Given none."
    assert given_answer("The answer is 1,104.") == "1104"


def test_oracle_labels_demo_records_with_a_worked_critique():
    problem = make_problems("meta", 1)[0]
    record = problem.to_record()
    record.response = problem.solution().replace("The answer is", "The answer is 1")
    oracle_label(record)
    assert record.judgement == INCORRECT and record.status == KEPT
    assert record.refined_response == problem.solution()
    assert record.feedback.startswith(problem.solution())
    assert oracle.operands(record) == (problem.a, problem.b, problem.op)


def test_oracle_checks_answers_of_other_tasks_and_refuses_without_gold():
    record = Record(
        id="1",
        prompt_id="1",
        prompt="2+2?",
        task="math",
        gold="4",
        response="It is 5. The answer is 5.",
        meta={"solution": "2+2=4 #### 4"},
    )
    oracle_label(record)
    assert record.judgement == INCORRECT
    assert "should be 4" in record.feedback and record.refined_response == "2+2=4 #### 4"
    good = Record(id="2", prompt_id="2", prompt="2+2?", gold="4", response="The answer is 4.")
    assert oracle_label(good).judgement == CORRECT and good.refined_response is None
    none = Record(id="3", prompt_id="3", prompt="hi", response="hello")
    assert oracle_label(none).status == REJECTED and "gold" in none.reject_reason
