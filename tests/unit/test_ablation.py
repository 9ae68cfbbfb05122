"""SELF's ablation, the pure part: its arms and the comparisons drawn from their summaries."""

import pytest

from selfevo import ablation
from selfevo.config import ConfigError, load_config


def _round(index, direct, n=400, **extra):
    return {"round": index, "direct_acc": direct, "eval_n": n, **extra}


def _summaries(restart=0.80, alone=0.70, unfiltered=0.74, qa_only=0.60):
    rounds = [
        _round(0, 0.70, refine_acc=0.70, sc_acc=0.71),
        _round(1, 0.80, kept_acc=0.99, kept=400, all_acc=0.75, generated=768),
        _round(2, 0.84),
        _round(3, 0.86, refine_acc=0.87, sc_acc=0.86, sc_refine_acc=0.88),
    ]
    return {
        "self": {"rounds": rounds},
        "unfiltered": {"rounds": [rounds[0], _round(1, unfiltered)]},
        "restart": {"rounds": [rounds[0], _round(1, 0.78), _round(2, restart)]},
        "continual_alone": {"rounds": [rounds[0], _round(1, 0.75), _round(2, alone)]},
        "qa_only": {"rounds": [_round(0, qa_only)]},
    }


def _by_name(rows):
    """Rows by a short name: the comparison's words before its first parenthesis."""
    return {row["comparison"].split(" (")[0]: row for row in rows}


def test_arms_change_one_setting_each_and_share_the_meta_phase_where_they_may():
    arms = {arm.name: arm for arm in ablation.arms(3)}
    assert list(arms) == ["self", "unfiltered", "restart", "continual_alone", "qa_only"]
    assert arms["self"].rounds == 3 and not arms["self"].shares_meta
    assert arms["qa_only"].rounds == 0 and not arms["qa_only"].shares_meta  # its meta differs
    assert all(arms[n].shares_meta for n in ("unfiltered", "restart", "continual_alone"))
    assert "recipe.self_filter=false" in arms["unfiltered"].overrides
    assert [a.rounds for a in ablation.arms(1)] == [1, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="at least one round"):
        ablation.arms(0)
    assert [a.name for a in ablation.arms(2, ["qa_only", "self"])] == ["self", "qa_only"]
    with pytest.raises(ValueError, match="unknown ablation arm"):
        ablation.arms(2, ["self", "nope"])
    with pytest.raises(ValueError, match="need the self arm"):
        ablation.arms(2, ["restart"])
    for arm in ablation.arms(3):  # every arm is a valid config
        load_config("demo", [*arm.defaults, *arm.overrides, f"recipe.rounds={arm.rounds}"])
    # The self arm samples for self-consistency unless the user says otherwise.
    self_arm = load_config("demo", [*arms["self"].defaults, *arms["self"].overrides])
    assert (self_arm.eval.sc_samples, self_arm.eval.sc_refine) == (3, True)
    assert load_config("demo").eval.sc_samples == 0


def test_comparisons_report_the_papers_orderings_with_intervals():
    rows = _by_name(ablation.comparisons(_summaries()))
    kept = rows["self-filter: accuracy of round 1's self-generated answers"]
    assert [f["label"] for f in kept["figures"]] == ["kept answers", "all answers"]
    assert kept["holds"] and kept["beyond_intervals"]  # 0.99 of 400 vs 0.75 of 768
    trained = rows["self-filter: round 1's model"]
    assert [f["acc"] for f in trained["figures"]] == [0.80, 0.74] and trained["holds"]
    rounds = rows["rounds"]
    assert [f["acc"] for f in rounds["figures"]] == [0.70, 0.80, 0.84, 0.86]
    assert rounds["holds"] and not rounds["beyond_intervals"]  # 0.84 -> 0.86 overlaps
    strategy = rows["training strategy"]
    assert [f["acc"] for f in strategy["figures"]] == [0.80, 0.84, 0.70]
    assert strategy["holds"] is False  # restart below continual: said, not hidden
    assert rows["meta-skill learning"]["holds"]
    inference = rows["inference"]
    assert [f["acc"] for f in inference["figures"]] == [0.87, 0.86, 0.86, 0.88]
    assert inference["figures"][3]["label"] == "self-consistency of refined answers"
    for row in rows.values():
        for fig in row["figures"]:
            low, high = fig["ci"]
            assert low <= fig["acc"] <= high


def test_flat_rounds_and_tied_refinement_are_not_a_reproduced_gain():
    summaries = _summaries()
    for entry in summaries["self"]["rounds"]:
        entry.update(direct_acc=0.80, refine_acc=0.80)
    rows = _by_name(ablation.comparisons(summaries))
    assert rows["rounds"]["holds"] is False
    assert rows["inference"]["holds"] and rows["inference"]["ties"]
    assert "holds only with ties" in ablation.markdown(list(rows.values()))


def test_an_arm_not_run_is_not_measured_and_the_table_says_so():
    summaries = _summaries()
    del summaries["restart"]
    rows = ablation.comparisons(summaries)
    strategy = _by_name(rows)["training strategy"]
    assert strategy["holds"] is None
    table = ablation.markdown(rows)
    assert "restart: not measured" in table and "| not measured |" in table
    assert "**differs from the paper**" not in table
    assert "kept answers 0.990 [" in table


def test_the_plot_draws_every_comparison(tmp_path):
    path = tmp_path / "ablation.png"
    ablation.plot(ablation.comparisons(_summaries()), path)
    assert path.stat().st_size > 5000


def test_the_arms_switches_belong_to_their_recipes():
    with pytest.raises(ConfigError, match=r"recipe\.self_filter"):
        load_config("recipes/isheep_demo", ["recipe.self_filter=false"])
    with pytest.raises(ConfigError, match=r"recipe\.meta_skill_data"):
        load_config("recipes/mistake_analysis_demo", ["recipe.meta_skill_data=false"])
    with pytest.raises(ConfigError, match=r"recipe\.analysis_rows"):
        load_config("demo", ["recipe.analysis_rows=false"])
    with pytest.raises(ValueError, match="ablations of"):
        ablation.arms(2, recipe="isheep")
    with pytest.raises(ValueError, match="ablations of"):
        ablation.comparisons({}, "isheep")
    assert ablation.main_rounds("self", 2, None) == 3
    assert ablation.main_rounds("mistake_analysis", 2, None) == 2
    assert ablation.main_rounds("self", 2, 1) == 1


def test_mistake_analysis_arms_compare_with_and_without_the_analyses():
    arms = ablation.arms(2, recipe="mistake_analysis")
    assert [(a.name, a.rounds, a.shares_meta) for a in arms] == [
        ("analysis", 2, False), ("answers_only", 2, True)
    ]  # fmt: skip
    for arm in arms:
        load_config("recipes/mistake_analysis_demo", list(arm.overrides))
    with pytest.raises(ValueError, match="need the analysis arm"):
        ablation.arms(2, ["answers_only"], recipe="mistake_analysis")
    zero = _round(0, 0.70, eval_judge_balanced=0.80, eval_judged=400)
    last_with = _round(2, 0.78, eval_judge_balanced=0.95, eval_judged=380)
    last_without = _round(2, 0.79, eval_judge_balanced=0.7, eval_judged=390)
    summaries = {
        "analysis": {"rounds": [zero, _round(1, 0.75), last_with]},
        "answers_only": {"rounds": [zero, _round(1, 0.74), last_without]},
    }
    rows = ablation.comparisons(summaries, "mistake_analysis")
    direct, check, rounds = rows
    assert [f["acc"] for f in direct["figures"]] == [0.78, 0.79]
    assert direct["holds"] is False and "round 2" in direct["comparison"]
    assert [(f["acc"], f["n"]) for f in check["figures"]] == [(0.95, 380), (0.7, 390)]
    assert check["holds"] and check["beyond_intervals"]
    assert [f["acc"] for f in rounds["figures"]] == [0.70, 0.75, 0.78] and rounds["holds"]
    assert "differs from the paper" in ablation.markdown(rows)
    missing = ablation.comparisons({"analysis": summaries["analysis"]}, "mistake_analysis")
    assert missing[0]["holds"] is None


def test_the_qa_only_arm_learns_the_qa_pairs_alone():
    from types import SimpleNamespace

    from selfevo.division_world.problems import make_problems
    from selfevo.oracle import oracle_label
    from selfevo.recipes.self_refine import meta_corpus

    labeled = []
    for problem in make_problems("meta", 6):
        record = problem.to_record()
        record.response = "The answer is 1."  # wrong: a critique and a refinement each
        labeled.append(oracle_label(record))

    def corpus(*overrides):
        config = load_config("demo", list(overrides))
        ctx = SimpleNamespace(config=config, records_of=lambda *_: labeled)
        return sorted(example.source for example in meta_corpus(ctx))

    assert corpus() == ["meta_feedback"] * 6 + ["meta_refine"] * 6 + ["qa"] * 6
    assert corpus("recipe.meta_skill_data=false") == ["qa"] * 6
    # A right answer gives a false alarm's refinement, which keeps it (on by default).
    labeled[0].response = make_problems("meta", 6)[0].solution()
    oracle_label(labeled[0])
    assert corpus().count("meta_refine_kept") == 1 and corpus().count("meta_refine") == 5
    assert "meta_refine_kept" not in corpus("recipe.false_alarm_refinements=false")
