"""I-SHEEP's pure round logic: synthesis prompts, accepted instructions, the score filter,
self-assessment stages and the demo world's warm-up corpus."""

from __future__ import annotations

import pytest

from selfevo import isheep
from selfevo.demo_world import problems as world_problems
from selfevo.generation import LENGTH, STOP, Completion
from selfevo.records import KEPT, PENDING, REJECTED, Record
from selfevo.stages import ASSESS_FOLLOWING, ASSESS_QUALITY, STAGES

SEEDS = [p.question for p in world_problems.make_problems("seed", 8)]


def _rows(responses: list[str | None], truncated: tuple[int, ...] = ()) -> list[Record]:
    rows = isheep.synthesis_rows(
        SEEDS, [], len(responses), 1, seed=0, shots=3, from_generated=1, task="arithmetic"
    )
    for k, (row, text) in enumerate(zip(rows, responses, strict=True)):
        row.response = text
        if k in truncated:
            row.reject("truncated", "response hit max_new_tokens=96")
    return rows


def test_synthesis_rows_are_few_shot_prompts_ending_at_the_next_number():
    rows = isheep.synthesis_rows(
        SEEDS, ["Kai has 101 pens and gets 202 more. How many now?"], 4, 2, seed=0, shots=3,
        from_generated=1, task="arithmetic",
    )  # fmt: skip
    again = isheep.synthesis_rows(
        SEEDS, ["Kai has 101 pens and gets 202 more. How many now?"], 4, 2, seed=0, shots=3,
        from_generated=1, task="arithmetic",
    )  # fmt: skip
    assert [r.messages for r in rows] == [r.messages for r in again]  # deterministic
    text = rows[0].messages[0].content
    assert text.startswith("New problems:\n1. ") and text.endswith("\n4.")
    assert "Kai has 101 pens" in text
    assert {r.round for r in rows} == {2} and len({r.id for r in rows}) == 4


def test_accepted_instructions_become_prompts_and_every_candidate_has_a_verdict():
    new = "Ivy has 512 beads and gets 233 more. How many now?"
    rows = _rows(
        [
            new,  # accepted, with its gold answer read back from the text
            SEEDS[0],  # a copy of a seed: near duplicate
            "777",  # too short
            new.replace("512", "513"),  # near duplicate of the first (same template, name, item)
            None,  # nothing written
            "Leo has 120 cards and gives away 20. How many left?\nA shop had 9",  # cut off
        ],
        truncated=(5,),
    )
    result = isheep.accept_synthesized(
        rows,
        [(f"seed{i}", s) for i, s in enumerate(SEEDS)],
        threshold=0.85,
        min_words=3,
        max_words=40,
        make_prompt=lambda cid, text: world_problems.problem_record(text, cid),
    )
    reasons = {d.id: (d.reason or "accepted").split(":")[0] for d in result.decisions}
    assert reasons == {
        f"{rows[0].id}.0": "accepted",
        f"{rows[1].id}.0": "near_duplicate",
        f"{rows[2].id}.0": "too_short",
        f"{rows[3].id}.0": "near_duplicate",
        f"{rows[5].id}.0": "accepted",
    }
    assert [r.status for r in rows] == [KEPT, REJECTED, REJECTED, REJECTED, REJECTED, KEPT]
    assert rows[4].reject_reason == "no_instruction: no task in the continuation"
    assert rows[2].reject_reason.startswith("no_instruction: too_short")
    assert [p.prompt for p in result.prompts] == [
        new,
        "Leo has 120 cards and gives away 20. How many left?",
    ]
    assert [p.gold for p in result.prompts] == ["745", "100"]


def test_score_filter_keeps_only_pairs_reaching_both_thresholds():
    def scored(quality, following):
        record = Record(id="x#0", prompt_id="x", prompt="q", response="r")
        record.scores = {"quality": quality, "following": following}
        return isheep.score_filter(record, 8, 8)

    assert scored(9, 8).status == KEPT and scored(9, 8).final_response == "r"
    assert scored(7, 9).reject_reason == "low_score: quality 7 < 8"
    assert scored(2, 2).reject_reason == "low_score: quality 2 < 8, following 2 < 8"
    done = Record(id="y#0", prompt_id="y", prompt="q", status=REJECTED, reject_reason="truncated")
    assert isheep.score_filter(done, 8, 8).reject_reason == "truncated"


@pytest.mark.parametrize(
    ("stage", "text", "finish", "score", "reason"),
    [
        (ASSESS_QUALITY, "347+285\nGiven 632.\nScore: 9", STOP, 9.0, None),
        (ASSESS_FOLLOWING, "7||does what was asked", STOP, 7.0, None),
        (ASSESS_QUALITY, "looks fine to me", STOP, None, "no_score: quality: no score"),
        (ASSESS_QUALITY, "Score: 12", STOP, None, "no_score: quality: score 12 out of range"),
        (ASSESS_FOLLOWING, "347+285\nGiven", LENGTH, None, "no_score: following assessment cut"),
    ],
)
def test_assessment_stages_score_or_reject_with_a_reason(stage, text, finish, score, reason):
    record = Record(id="p#0", prompt_id="p", prompt="Mia has 347 stamps", task="arithmetic")
    record.response = "347+285\nThe answer is 632."
    spec = STAGES[stage]
    assert spec.select(record) and spec.feedback
    assert "Mia has 347 stamps" in spec.messages(record, "default")[-1].content
    spec.apply(record, Completion(text, 10, 5, finish), 160)
    aspect = stage.removeprefix("assess_")
    assert record.scores.get(aspect) == score
    assert (
        (record.reject_reason or None) is None
        if reason is None
        else record.reject_reason.startswith(reason)
    )
    assert record.status == (PENDING if reason is None else REJECTED)
    assert not spec.select(record)


def test_warmup_teaches_synthesis_and_both_scores_from_the_oracle():
    problems = world_problems.make_problems("meta", 3)
    labeled = []
    for p, response in zip(
        problems, [p.solution() for p in problems[:2]] + ["1+1\nThe answer is 2."], strict=True
    ):
        record = p.to_record()
        record.id, record.response = f"{p.id}#0", response
        labeled.append(record)
    examples = isheep.warmup_examples(labeled, SEEDS, seed=0, shots=3, from_generated=1)
    by_source = {}
    for e in examples:
        by_source.setdefault(e.source, []).append(e)
    assert {k: len(v) for k, v in by_source.items()} == {
        "warmup_synthesize": 3, "warmup_quality": 3, "warmup_following": 3
    }  # fmt: skip
    assert by_source["warmup_synthesize"][0].target == problems[0].question
    assert by_source["warmup_synthesize"][0].messages[0].content.endswith("\n4.")
    quality = [e.target.splitlines()[-1] for e in by_source["warmup_quality"]]
    following = [e.target.splitlines()[-1] for e in by_source["warmup_following"]]
    assert quality == ["Score: 9", "Score: 9", "Score: 2"]
    assert following == ["Score: 9", "Score: 9", "Score: 2"]


def test_quality_auc_is_the_chance_a_right_answer_outscores_a_wrong_one():
    assert isheep.separation_auc([9, 9], [2, 2, 2]) == 1.0
    assert isheep.separation_auc([2], [9]) == 0.0
    assert isheep.separation_auc([9, 9, 2], [2, 2]) == round(5 / 6, 4)  # ties count half
    assert isheep.separation_auc([5, 5], [5]) == 0.5
    assert isheep.separation_auc([], [2]) is None and isheep.separation_auc([9], []) is None


def test_score_quality_reports_the_auc_against_gold():
    problems = world_problems.make_problems("meta", 4)
    records = []
    for p, right, score in zip(problems, (True, True, False, False), (9, 2, 2, 2), strict=True):
        record = p.to_record()
        record.response = p.solution() if right else "1+1\nThe answer is 2."
        record.scores = {isheep.QUALITY: score}
        records.append(record)
    quality = isheep.score_quality(records)
    assert quality["scored_with_gold"] == 4
    assert (quality["mean_quality_right"], quality["mean_quality_wrong"]) == (5.5, 2.0)
    assert quality["quality_auc"] == 0.75  # (1 + 0.5 + 1 + 0.5) / 4


def test_a_world_with_a_synthesis_form_teaches_it_and_reads_its_candidates():
    from selfevo.division_world import problems as division

    made = division.make_problems("meta", 2)
    labeled = [p.to_record() for p in made]
    for record, p in zip(labeled, made, strict=True):
        record.response = p.solution()
    seeds = [p.question for p in division.make_problems("seed", 4)]
    examples = isheep.warmup_examples(labeled, seeds, seed=0, shots=2, from_generated=1)
    synthesis = next(e for e in examples if e.source == "warmup_synthesize")
    target, lines = synthesis.target, synthesis.target.splitlines()
    # Answer times divisor, the product, the division, then the problem in the wording of the
    # list's last problem, with the new numbers.
    quotient, divisor = lines[0].split("*")
    assert lines[-3] == f"={int(quotient) * int(divisor)}" == f"={made[0].dividend}"
    assert lines[-2] == f"{made[0].dividend}/{divisor}"
    last = synthesis.messages[0].content.splitlines()[-2].split(". ", 1)[1]
    assert lines[-1] == division.reworded(last, made[0].dividend, made[0].divisor)
    assert division.parse_problem(lines[-1]) == (made[0].dividend, made[0].divisor)
    twice = isheep.warmup_examples(
        labeled, seeds, seed=0, shots=2, from_generated=1, synthesis_per_problem=2
    )
    written = [e for e in twice if e.source == "warmup_synthesize"]
    assert len(written) == 4 and len({e.id for e in written}) == 4
    assert len({e.messages[0].content for e in written}) == 4  # each after its own list
    rows = isheep.synthesis_rows(seeds, [], 3, 1, seed=0, shots=2, from_generated=0,
                                 task="division")  # fmt: skip
    rows[0].response = target
    rows[2].response = "Leo has 5 pens\n2. Ana has 3 pens now"  # not the form: Self-Instruct's
    rows[1].response = "7*3\n7*3=1 c2\n=21\n21/3\nNot a problem at all"
    result = isheep.accept_synthesized(
        rows, [], threshold=0.9, min_words=3, max_words=40,
        make_prompt=lambda i, text: division.problem_record(text, i),
        parse=division.composed_problems,
    )  # fmt: skip
    assert [d.instruction for d in result.decisions] == [
        lines[-1], "Not a problem at all", "Leo has 5 pens", "Ana has 3 pens now"
    ]  # fmt: skip
    # A problem that does not pose the division its working built is rejected as such.
    assert result.decisions[1].reason == "not_composed: poses no numbers, not 21/3"
    assert rows[1].status == REJECTED and "not_composed" in rows[1].reject_reason
    gold = str(made[0].dividend // made[0].divisor)
    assert [p.gold for p in result.prompts] == [gold, None, None]


def test_a_written_problem_that_poses_an_evaluation_problem_is_dropped_with_a_reason():
    """Held-out problems must not leak into training: a synthesized problem with an
    evaluation problem's numbers, in any wording, is rejected; its row is accounted for."""
    from selfevo.division_world import problems as division
    from selfevo.tasks import task_named

    task = task_named("division")
    asked = division.problem_record("Mia shares 684 coins among 4 friends. How many each?", "e")
    evaluation = {task.problem_key(asked)}
    seed = "Ben shares 12 pens among 3 friends. How many each?"
    rows = isheep.synthesis_rows([seed] * 2, [], 2, 1, seed=0, shots=1, from_generated=0,
                                 task="division")  # fmt: skip
    written = [f"A shop packs {n} cards into 4 equal boxes. How many per box?" for n in (684, 688)]
    rows[0].response = f"171*4\n=684\n684/4\n{written[0]}"
    rows[1].response = f"172*4\n=688\n688/4\n{written[1]}"
    result = isheep.accept_synthesized(
        rows, [], threshold=0.99, min_words=3, max_words=40,
        make_prompt=lambda i, text: division.problem_record(text, i),
        parse=division.composed_problems,
        held_out=lambda record: task.problem_key(record) in evaluation,
    )  # fmt: skip
    verdicts = [(d.instruction, d.accepted, d.reason) for d in result.decisions]
    assert verdicts == [(written[0], False, isheep.HELD_OUT_REASON), (written[1], True, None)]
    assert [p.prompt for p in result.prompts] == [written[1]]
    assert rows[0].status == REJECTED and "held_out" in rows[0].reject_reason
    assert rows[1].status == KEPT
    # A task without a key of its own knows a problem by its text, case and spacing aside.
    plain = Record(id="a", prompt_id="a", prompt=" What is  2+2?")
    assert task_named("arithmetic").problem_key(plain) == "what is 2+2?"


def test_problem_keys_read_chat_records_and_odd_numbers_without_failing():
    from selfevo.division_world import problems as division
    from selfevo.records import Message
    from selfevo.tasks import task_named

    question = "Mia shares 684 coins among 4 friends. How many each?"
    chat = Record(id="c", prompt_id="c", messages=[Message("user", question)])
    assert task_named("division").problem_key(chat) == ("division", 684, 4)
    assert task_named("arithmetic").problem_key(chat) == question.lower()
    odd = division.problem_record(question, "o")
    odd.meta = {"dividend": "684.0", "divisor": "4"}
    # Numbers that are not whole ones: the key comes from the text.
    assert task_named("division").problem_key(odd) == ("division", 684, 4)
