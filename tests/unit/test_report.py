"""summary.json and report.md from a manifest alone."""

import json

from selfevo.manifest import Manifest
from selfevo.recipes import RECIPES
from selfevo.report import (
    accuracy_axis_limits,
    build_summary,
    format_table,
    table_rows,
    write_report,
)


def _finished_run(tmp_path, rounds=1):
    manifest = Manifest.open(tmp_path, "h", rounds, RECIPES["self"].round_steps)
    for step in list(manifest.steps):
        manifest.start(step.name)
        metrics = {}
        if step.name.endswith(".eval"):
            acc = round(0.4 + 0.2 * int(step.name[5]), 2)
            metrics = {
                "direct": {
                    "acc": acc,
                    "ci": [round(acc - 0.04, 2), round(acc + 0.04, 2)],
                    "n": 500,
                },
                "refine": {"acc": acc + 0.01, "ci": [acc - 0.03, acc + 0.05], "n": 500},
                "judge": {"precision": 0.9, "recall": 0.8, "agreement": 0.85},
            }
        if step.name.endswith(".filter"):
            metrics = {
                "generated": 100,
                "kept": 60,
                "kept_acc": 0.95,
                "all_acc": 0.7,
                "judge": {"precision": 0.95, "recall": 0.85},
            }
        if step.name == "meta.label":
            metrics = {
                "labeler": "oracle",
                "judged_correct": 5,
                "judged_incorrect": 7,
                "labeler_errors": 0,
            }
        manifest.finish(step.name, {}, metrics)
    return manifest


def test_summary_lists_rounds_from_the_meta_model(tmp_path):
    _finished_run(tmp_path, rounds=1)
    summary = build_summary(tmp_path)
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    zero, one = summary["rounds"]
    assert zero["direct_acc"] == 0.4 and zero["kept_acc"] is None and zero["all_acc"] is None
    assert one["direct_acc"] == 0.6 and one["direct_ci"] == [0.56, 0.64]
    assert (one["generated"], one["kept"], one["kept_acc"], one["all_acc"]) == (100, 60, 0.95, 0.7)
    assert summary["complete"] and summary["wall_seconds"] >= 0
    assert "train" in one["seconds"] and "meta.train" in zero["seconds"]


def test_report_writes_summary_markdown_and_plots(tmp_path):
    _finished_run(tmp_path, rounds=2)
    summary = write_report(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    report = (tmp_path / "report.md").read_text()
    for plot in ("accuracy.png", "yield.png", "filter.png", "time.png"):
        assert (tmp_path / plot).stat().st_size > 1000
        assert f"]({plot})" in report
    assert "| 2 | 0.800 [0.760, 0.840] |" in report
    table = format_table(summary)
    assert table.splitlines()[0].startswith("round") and "60/100" in table
    assert "held-out judge" in table and "0.850 (0.90/0.80)" in table


def test_half_finished_run_reports_the_rounds_it_has(tmp_path):
    manifest = Manifest.open(tmp_path, "h", 2, RECIPES["self"].round_steps)
    for name in ("meta.label", "meta.train", "round0.eval"):
        manifest.start(name)
        manifest.finish(
            name,
            {},
            {"direct": {"acc": 0.5, "ci": [0.45, 0.55], "n": 500}} if name == "round0.eval" else {},
        )
    summary = build_summary(tmp_path)
    assert len(summary["rounds"]) == 1 and not summary["complete"]


def test_the_accuracy_axis_frames_the_change_and_its_intervals():
    """0.930 -> 0.960 on a 0-1 axis is a flat line; the axis spans the data instead."""
    rounds = [
        {"direct_acc": 0.930, "direct_ci": [0.905, 0.950], "refine_acc": None, "sc_acc": None},
        {
            "direct_acc": 0.960,
            "direct_ci": [0.940, 0.975],
            "refine_acc": 0.958,
            "refine_ci": [0.938, 0.973],
            "sc_acc": None,
        },
    ]
    low, high = accuracy_axis_limits(rounds)
    assert 0.85 < low < 0.905 and 0.975 < high <= 1.0
    assert (0.960 - 0.930) / (high - low) > 0.2  # the gain fills a fifth of the axis or more
    assert accuracy_axis_limits([{"direct_acc": None, "refine_acc": None, "sc_acc": None}]) == (
        0.0,
        1.0,
    )


def test_isheep_rounds_report_valid_synthesized_prompts_and_the_quality_auc(tmp_path):
    manifest = Manifest.open(tmp_path, "h", 1, RECIPES["isheep"].round_steps)
    for step in list(manifest.steps):
        manifest.start(step.name)
        metrics = {}
        if step.name.endswith(".eval"):
            metrics = {"direct": {"acc": 0.5, "ci": [0.45, 0.55], "n": 400}}
        if step.name == "round1.synthesize":
            metrics = {"accepted": 200, "with_gold": 170}
        if step.name == "round1.filter":
            metrics = {"generated": 200, "kept": 90, "quality_auc": 0.81}
        manifest.finish(step.name, {}, metrics)
    one = build_summary(tmp_path)["rounds"][1]
    assert (one["synthesized"], one["synthesized_valid"], one["quality_auc"]) == (200, 170, 0.81)
    table = format_table(build_summary(tmp_path))
    assert "valid synthesized" in table and "170/200 (85%)" in table and "0.810" in table
    _finished_run(tmp_path / "self", rounds=1)
    assert "valid synthesized" not in format_table(build_summary(tmp_path / "self"))


def test_the_sc_column_appears_only_where_a_round_measured_self_consistency(tmp_path):
    _finished_run(tmp_path, rounds=1)
    summary = build_summary(tmp_path)
    header = format_table(summary).splitlines()[0]
    assert "sc acc" not in header and "refine acc" in header
    summary["rounds"][1]["sc_acc"] = 0.655
    table = format_table(summary)
    assert "sc acc" in table.splitlines()[0] and "0.655" in table
    # Every row keeps the header's width, whichever columns are shown.
    widths = {len(row) for row in table_rows(summary)}
    assert len(widths) == 1
