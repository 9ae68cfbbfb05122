"""Mistake analysis's pure round logic: rows, induction and analysis stages, the filter, the
training examples, and the demo world's flawed solutions."""

from __future__ import annotations

import pytest

from selfevo import mistakes
from selfevo.demo_world import oracle
from selfevo.demo_world import problems as world_problems
from selfevo.evaluation import is_correct
from selfevo.generation import STOP, Completion
from selfevo.records import KEPT, REJECTED
from selfevo.stages import ANALYZE, FEEDBACK, GENERATE, INDUCE, STAGES

CASES = [(347, 285, "+"), (742, 351, "-"), (123, 456, "+"), (500, 123, "-"), (999, 999, "+")]


@pytest.mark.parametrize(("a", "b", "op"), CASES)
def test_flawed_solutions_keep_the_format_and_get_the_answer_wrong(a, b, op):
    flawed = oracle.flawed_solution(a, b, op)
    record = world_problems.make_problems("pool", 1)[0].to_record()
    record.gold = str(a + b if op == "+" else a - b)
    assert flawed.splitlines()[0] == f"{a}{op}{b}" and len(flawed.splitlines()) == 5
    assert flawed.endswith(".") and not is_correct(record, flawed)
    assert oracle.critique(a, b, op, flawed).judgement == "incorrect"


def test_parse_problem_reads_back_every_template_and_nothing_else():
    for problem in world_problems.make_problems("pool", 60):
        assert world_problems.parse_problem(problem.question) == (problem.a, problem.b, problem.op)
    assert world_problems.parse_problem("Mia has many stamps. How many now?") is None
    made = world_problems.problem_record("Zoe has 12 pens and gets 30 more. How many now?", "z")
    assert made.gold == "42" and made.meta["op"] == "+"
    assert world_problems.problem_record("Write a poem", "w").gold is None


def _stage(record, name, text):
    spec = STAGES[name]
    if not spec.select(record):
        return False
    spec.messages(record, "default")
    spec.apply(record, Completion(text, 5, 5, STOP), 96)
    return True


def _round(own: str, induced: str, analysis: str):
    problem = world_problems.make_problems("pool", 1)[0]
    rows = mistakes.round_rows([problem.to_record()], 1)
    good, mistake = rows
    # Each stage picks only its own kind of row.
    assert _stage(good, GENERATE, own) and not _stage(mistake, GENERATE, "x")
    assert _stage(mistake, INDUCE, induced) and not _stage(good, INDUCE, "x")
    assert _stage(mistake, ANALYZE, analysis) and not _stage(good, ANALYZE, "x")
    assert not STAGES[FEEDBACK].select(mistake)
    return problem, mistakes.finalize_round(rows)


def test_a_real_mistake_with_an_analysis_is_kept_and_trains_behind_the_plain_prompt():
    problem, (good, mistake) = _round(
        "347+285\nThe answer is 632.", "347+285\nThe answer is 622.", "...\nJudgement: incorrect"
    )
    assert good.status == mistake.status == KEPT
    assert mistake.final_response == "...\nJudgement: incorrect"
    examples = mistakes.training_examples([good, mistake])
    own, analysis = examples
    assert own.target == "347+285\nThe answer is 632." and own.source == "own_answer"
    assert analysis.source == "analysis"
    prompt = analysis.messages[-1].content
    assert prompt == f"{problem.question}\nCheck: 622"  # unguided: no "Flawed" in it
    assert "Flawed" not in prompt


def test_an_induced_answer_equal_to_the_own_answer_is_not_a_mistake():
    _, (_, mistake) = _round("The answer is 5.", "The answer is 5.", "Judgement: incorrect")
    assert mistake.status == REJECTED
    assert mistake.reject_reason == "not_a_mistake: same final answer 5 as the own answer"


def test_an_analysis_that_calls_the_mistake_correct_is_dropped():
    _, (_, mistake) = _round("The answer is 5.", "The answer is 6.", "fine\nJudgement: correct")
    assert mistake.reject_reason.startswith("analysis_disagrees")


def test_round_quality_measures_induction_against_gold():
    problem = world_problems.make_problems("pool", 1)[0]
    _, rows = _round(problem.solution(), "The answer is 1.", "Judgement: incorrect")
    quality = mistakes.round_quality(rows)
    assert quality["all_acc"] == 1.0 and quality["induced_wrong"] == 1.0
    assert quality["kept_answers"] == quality["kept_analyses"] == 1


def test_warmup_has_induction_and_guided_analysis_of_flawed_and_own_wrong_answers():
    problems = world_problems.make_problems("meta", 2)
    labeled = []
    for p, (response, judgement) in zip(
        problems, [(problems[0].solution(), "correct"), ("The answer is 3.", "incorrect")],
        strict=True,
    ):  # fmt: skip
        record = p.to_record()
        record.id, record.response, record.judgement = f"{p.id}#0", response, judgement
        labeled.append(record)
    examples = mistakes.warmup_examples(labeled)
    sources = [e.source for e in examples]
    assert sources.count("warmup_induce") == 2 and sources.count("warmup_analyze") == 3
    analyses = [e for e in examples if e.source == "warmup_analyze"]
    assert all(e.target.endswith("Judgement: incorrect") for e in analyses)
    assert all("Flawed: " in e.messages[-1].content for e in analyses)
