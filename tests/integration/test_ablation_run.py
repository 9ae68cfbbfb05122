"""`selfevo ablate` cut to CI size: every arm runs on the real stack (local Ray, HF engines,
DeepSpeed on CPU), the arms that may share the main arm's meta-skill phase do, and the
outputs say what was measured."""

import json

import pyarrow.parquet as pq
import pytest

from actors.ablation import run_ablation
from selfevo.records import KEPT, Reject, table_to_records

JUDGED_INCORRECT, NO_JUDGEMENT = Reject.JUDGED_INCORRECT, Reject.NO_JUDGEMENT


@pytest.fixture(scope="module")
def ablated(ray_cluster, tmp_path_factory, reduced_demo):
    out = tmp_path_factory.mktemp("ablate")
    overrides = [
        *reduced_demo, "eval.sc_samples=0", "eval.sc_refine=false", "eval.num_problems=12",
        "data.prompts_per_round=12",
        f"run.output_dir={out}", "run.name=cut",
    ]  # fmt: skip
    lines: list[str] = []
    report = run_ablation("demo", overrides, 1, lines.append, ["self", "unfiltered"])
    return out / "cut-ablation", report, lines, overrides


def test_every_arm_runs_and_the_outputs_are_written(ablated):
    out, report, _, _ = ablated
    # CI runs two arms (the others are the same machinery with another train.mode,
    # meta_mix_ratio or meta corpus; unit tests check their overrides and the QA-only corpus).
    assert list(report["arms"]) == ["self", "unfiltered"]
    assert json.loads((out / "ablation.json").read_text()) == json.loads(json.dumps(report))
    table = (out / "ablation.md").read_text()
    assert "| comparison |" in table and "self-filter" in table
    assert (out / "ablation.png").stat().st_size > 5000
    for name, arm in report["arms"].items():
        assert arm["summary"]["complete"], name
        assert len(arm["summary"]["rounds"]) == arm["rounds"] + 1
    rows = {row["comparison"].split(" (")[0]: row for row in report["comparisons"]}
    assert len(rows) == 6
    assert rows["training strategy"]["holds"] is None  # its arms were not run: not measured
    assert "restart: not measured" in table
    for row in rows.values():
        for figure in row["figures"]:
            if figure["acc"] is not None:
                assert figure["ci"][0] <= figure["acc"] <= figure["ci"][1]


def test_arms_that_change_only_the_rounds_share_the_meta_skill_phase(ablated):
    out, _, lines, _ = ablated
    main = json.loads((out / "self" / "manifest.json").read_text())["steps"]
    for name in ("unfiltered",):
        steps = json.loads((out / name / "manifest.json").read_text())["steps"]
        for mine, theirs in zip(steps[:3], main[:3], strict=True):
            assert mine["name"] == theirs["name"] and mine["outputs"] == theirs["outputs"]
            assert mine["metrics"]["shared_from"] == str(out / "self")
        assert (out / name / "meta" / "model" / "hf" / "model.safetensors").is_file()
        assert not any(line.startswith(f"[{name}] [meta.label] started") for line in lines)
    assert any(line.startswith("[self] [meta.label] started") for line in lines)


def test_each_arm_changes_what_it_says(ablated):
    out, _, _, _ = ablated
    # Unfiltered: no answer is rejected for its verdict (or for having none); the CI-sized
    # critic seldom writes one, so this arm keeps answers the self arm rejected.
    rows = table_to_records(pq.read_table(out / "unfiltered" / "round1" / "filtered.parquet"))
    verdicts = (JUDGED_INCORRECT, NO_JUDGEMENT)
    assert not any((r.reject_reason or "").startswith(verdicts) for r in rows)
    main = table_to_records(pq.read_table(out / "self" / "round1" / "filtered.parquet"))
    assert any((r.reject_reason or "").startswith(verdicts) for r in main)
    assert sum(r.status == KEPT for r in rows) > sum(r.status == KEPT for r in main)


def test_running_it_again_resumes_and_gives_the_same_comparisons(ablated):
    _, report, _, overrides = ablated
    again = run_ablation("demo", overrides, 1, lambda _: None, ["self", "unfiltered"])
    assert again["comparisons"] == report["comparisons"]
