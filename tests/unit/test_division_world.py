"""The division world: long division, the multiply-back check, flawed solutions, splits, and
model-written problems read back."""

import pytest

from selfevo.division_world import oracle, problems
from selfevo.division_world.problems import (
    DIVISORS,
    make_problems,
    parse_problem,
    problem_record,
    solution_lines,
    split_of,
)
from selfevo.evaluation import is_correct, majority_answer
from selfevo.oracle import oracle_label
from selfevo.parsers import parse_judgement
from selfevo.records import CORRECT, INCORRECT, KEPT
from selfevo.task_api import WrittenTask
from selfevo.tasks import builtin_data, task_named


def test_long_division_brings_down_one_digit_a_line():
    assert solution_lines(684, 4) == [
        "684/4", "6/4=1 r2", "28/4=7 r0", "4/4=1 r0", "The answer is 171.",
    ]  # fmt: skip
    assert solution_lines(1368, 8)[1:3] == ["1/8=0 r1", "13/8=1 r5"]


def test_every_solution_is_right_and_every_problem_divides_exactly():
    for problem in make_problems("seed", 300):
        assert problem.divisor in DIVISORS and problem.dividend % problem.divisor == 0
        assert 100 <= problem.answer <= 9999
        assert is_correct(problem.to_record(), problem.solution())
        assert parse_problem(problem.question) == (problem.dividend, problem.divisor)


def test_splits_are_disjoint_and_deterministic():
    heldout = make_problems("heldout", 400)
    assert heldout == make_problems("heldout", 400)
    held = {(p.answer, p.divisor) for p in heldout}
    assert all(split_of(q, d) == "heldout" for q, d in held)
    for split in ("seed", "meta", "pool"):
        assert not held & {(p.answer, p.divisor) for p in make_problems(split, 2000)}, split
    assert make_problems("pool", 10, start=10) == make_problems("pool", 20)[10:]
    with pytest.raises(ValueError, match="unknown split"):
        make_problems("train", 1)


def test_the_check_multiplies_back_and_pairs_the_digits():
    verdict, feedback = oracle.check(684, 4, "684/4\nThe answer is 171.")
    assert verdict == CORRECT
    assert feedback.splitlines() == [
        "684/4", "171*4", "1*4=4 c0", "7*4=8 c2", "1*4+2=6 c0",
        "=00684", "00684", "0=0 0=0 6=6 8=8 4=4", "Judgement: correct",
    ]  # fmt: skip
    verdict, feedback = oracle.check(684, 4, "The answer is 181.")
    assert verdict == INCORRECT
    assert feedback.splitlines()[-4:-1] == ["=00724", "00684", "0=0 0=0 7x6 2x8 4=4"]
    assert parse_judgement(feedback).judgement == INCORRECT
    # No whole answer to multiply: said so, judged incorrect.
    for response in ("no number", "The answer is 42.5.", "The answer is -171."):
        verdict, feedback = oracle.check(684, 4, response)
        assert verdict == INCORRECT and "Not a whole answer" in feedback
    verdict, feedback = oracle.check(684, 4, "The answer is 12345678.")
    assert verdict == INCORRECT and "Too many digits" in feedback


def test_the_verdict_follows_the_pairs_for_any_answer():
    for problem in make_problems("meta", 200):
        for answer in (problem.answer, problem.answer + 1, problem.answer - 10, 7):
            verdict, feedback = oracle.check(
                problem.dividend, problem.divisor, f"The answer is {answer}."
            )
            pairs = feedback.splitlines()[-2]
            assert ("x" not in pairs) == (verdict == CORRECT) == (answer == problem.answer)


def test_oracle_labels_division_records_with_a_check_and_the_gold_refinement():
    problem = make_problems("meta", 1)[0]
    record = problem.to_record()
    record.response = problem.solution().replace("The answer is ", "The answer is 1")
    oracle_label(record)
    assert record.judgement == INCORRECT and record.status == KEPT
    assert record.refined_response == problem.solution()
    assert record.feedback.splitlines()[0] == f"{problem.dividend}/{problem.divisor}"
    assert oracle.operands(record) == (problem.dividend, problem.divisor)


def test_a_false_alarm_is_the_right_answers_check_with_one_slip():
    """One line of the check differs from the oracle's (the dividend copied, or a column's
    product digit), the pairs then differ where the slip went, and the verdict is incorrect."""
    kinds = set()
    for seed, problem in enumerate(make_problems("meta", 200)):
        right = f"The answer is {problem.answer}."
        _, true_check = oracle.check(problem.dividend, problem.divisor, right)
        alarm = oracle.false_alarm(problem.dividend, problem.divisor, right, seed)
        true_lines, alarm_lines = true_check.splitlines(), alarm.splitlines()
        assert parse_judgement(alarm).judgement == INCORRECT
        assert len(alarm_lines) == len(true_lines) and alarm_lines[0] == true_lines[0]
        changed = [
            i for i, (a, b) in enumerate(zip(true_lines, alarm_lines, strict=True)) if a != b
        ]
        slip = changed[0]
        kind = "copy" if alarm_lines[slip] == alarm_lines[-3] else "column"
        kinds.add(kind)
        if kind == "column":  # column k (ones first) writes the product's k-th digit
            slipped_digit = alarm_lines[slip].split("=")[-1].split(" ")[0]
            assert alarm_lines[-4][1 - slip] == slipped_digit  # line 2 is the ones column
        # The slip, the pairs and the verdict; a column slip also changes the product line.
        assert set(changed) - {slip, len(true_lines) - 4} == {
            len(true_lines) - 2,
            len(true_lines) - 1,
        }
        product, dividend = alarm_lines[-4][1:], alarm_lines[-3]
        pairs = " ".join(
            f"{u}{'=' if u == v else 'x'}{v}" for u, v in zip(product, dividend, strict=True)
        )
        assert alarm_lines[-2] == pairs and pairs.count("x") == 1
    assert kinds == {"copy", "column"}
    # Only a right answer has a false alarm.
    assert oracle.false_alarm(684, 4, "The answer is 172.", 0) is None
    assert oracle.false_alarm(684, 4, "no number", 1) is None


def test_a_flawed_solution_keeps_the_form_and_is_wrong():
    for problem in make_problems("meta", 100):
        flawed = oracle.flawed_solution(problem.dividend, problem.divisor)
        record = problem.to_record()
        assert not is_correct(record, flawed)
        right, wrong = problem.solution().splitlines(), flawed.splitlines()
        assert len(right) == len(wrong) and right[0] == wrong[0]
        assert sum(a != b for a, b in zip(right[1:-1], wrong[1:-1], strict=True)) == 1


def test_assessment_scores_right_and_wrong_answers_apart():
    problem = make_problems("meta", 1)[0]
    quality, following = oracle.assessment(problem.dividend, problem.divisor, problem.solution())
    assert quality.endswith("Score: 9") and following.endswith("Score: 9")
    quality, following = oracle.assessment(
        problem.dividend, problem.divisor, "1/2\nThe answer is 3."
    )
    assert quality.endswith("Score: 2") and following.endswith("Score: 2")


@pytest.mark.parametrize(
    ("text", "known"),
    [
        ("Mia shares 684 coins among 4 friends. How many each?", (684, 4)),
        ("A shop packs 1368 pens into 8 equal boxes. How many per box?", (1368, 8)),
        ("Mia shares 685 coins among 4 friends. How many each?", None),  # not exact
        ("Mia shares 684 coins among 1 friends. How many each?", None),  # divisor outside
        ("Mia shares coins among friends.", None),
    ],
)
def test_model_written_problems_parse_only_as_exact_divisions(text, known):
    assert parse_problem(text) == known
    record = problem_record(text, "s-1")
    assert (record.gold is not None) == (known is not None)
    if known:
        assert record.gold == str(known[0] // known[1])


def test_the_world_is_registered_with_its_data_and_templates():
    task = task_named("division")
    assert task.writes_warmups and task.templates["feedback"].endswith("Check: {answer}")
    pool = builtin_data("builtin:division").make("pool", 3, 0, 0)
    heldout = builtin_data("builtin:division-heldout")
    assert heldout.heldout and all(r.task == "division" and r.gold for r in pool)


@pytest.mark.parametrize(
    "response",
    ["684/4", "684/4\n6/4=1 r2\n28/4=7 r0\n4/4=1 r0", "It is 171.", "The answer is 684/4."],
)
def test_only_a_stated_answer_counts_never_a_restated_question(response):
    """684/4 reads as the number 171: a response that stops at the equation, states it as its
    answer, or gives no stated answer, must not be credited, by the gold or by the check."""
    record = make_problems("meta", 1)[0].to_record()
    record.meta.update({"dividend": "684", "divisor": "4"})
    record.gold = "171"
    assert not is_correct(record, response)
    assert oracle.check(684, 4, response)[0] == INCORRECT
    assert majority_answer([response, response]) is not None  # another task would count it
    assert majority_answer([response, response], strict=True) is None
    assert is_correct(record, "684/4\nThe answer is 171.")


def test_a_composed_problem_is_read_back_after_its_product_line():
    question = "Mia shares 684 coins among 4 friends. How many each?"
    text = problems.composition_text(684, 4, question)
    lines = ["171*4", "1*4=4 c0", "7*4=8 c2", "1*4+2=6 c0", "=684", "684/4", question]
    assert text.splitlines() == lines
    assert problems.composed_problems(text) == [WrittenTask(question)]
    more = (
        f"{text}\n5. 12*3\n2*3=6 c0\n1*3=3 c0\n=36\n36/3\n5. Ben splits 36 pens into 3 equal piles."
        "\n14*2\n=28\n28/2\nAna splits 82 pens into 2 equal piles.\n=9\n9/3\nAna splits pens"
        "\n=648\n684/4\nMia shares 684 coins among 4 friends."
    )
    assert problems.composed_problems(more) == [
        WrittenTask(question),
        WrittenTask("Ben splits 36 pens into 3 equal piles."),
        # Not the division the working built: flawed, whatever it poses.
        WrittenTask(
            "Ana splits 82 pens into 2 equal piles.", "not_composed: poses 82 and 2, not 28/2"
        ),
        WrittenTask("Ana splits pens", "not_composed: poses no numbers, not 9/3"),
        WrittenTask(
            "Mia shares 684 coins among 4 friends.",
            "not_composed: divides 684, not the product 648",
        ),
    ]
    # No product line: not this form (I-SHEEP reads it as Self-Instruct's).
    assert problems.composed_problems("Leo has 5 pens\nmore") is None
    assert problems.composed_problems("") is None and problems.composed_problems(None) is None
    # Cut off after the product, or no division line: nothing (not the multiplication).
    assert problems.composed_problems("171*4\n1*4=4 c0\n=684") == []
    assert problems.composed_problems("171*4\n=684\n12*3\nMia shares 36") == []


def test_a_problem_reworded_keeps_its_wording_with_new_numbers():
    question = "Mia shares 684 coins among 4 friends. How many each?"
    assert (
        problems.reworded(question, 35, 5) == "Mia shares 35 coins among 5 friends. How many each?"
    )
    assert problems.reworded("A shop packs 7 pens into 2 equal boxes. How many per box?", 8, 2) == (
        "A shop packs 8 pens into 2 equal boxes. How many per box?"
    )
    assert problems.reworded("What is 3+4?", 8, 2) is None
