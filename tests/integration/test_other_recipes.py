"""I-SHEEP and mistake analysis (with its ablation) end to end on the real stack, reduced to
CI size.

The same stack as the SELF run (local Ray, the HF engine pool, Ray Data, Ray Train +
DeepSpeed on CPU, the coordinator): a one-round run of each demo recipe with a short
warm-up. After three training steps the model writes mostly noise, which is the point:
every synthesis prompt, candidate instruction and answered row must still end kept or
rejected with a reason, and the run must finish.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from actors.ablation import run_ablation
from actors.coordinator import run_recipe
from actors.models import load_model
from selfevo.config import load_config
from selfevo.manifest import plan_steps
from selfevo.recipes import RECIPES
from selfevo.records import KEPT, REJECTED, table_to_records

REDUCED = [
    "recipe.rounds=1",
    "data.meta_examples=24",
    "data.prompts_per_round=16",
    "eval.num_problems=16",
    "eval.sc_samples=2",
    "train.max_steps=3",
]


def _records(path: Path):
    return table_to_records(pq.read_table(path))


def _run(name: str, tmp_path: Path, extra: list[str]):
    config = load_config(
        f"recipes/{name}", [*REDUCED, *extra, f"run.output_dir={tmp_path}", "run.name=reduced"]
    )
    summary = run_recipe(config)
    run_dir = tmp_path / "reduced"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {s["status"] for s in manifest["steps"]} == {"done"}
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    for model in ("meta/model/hf", "round1/model/hf"):
        assert load_model(str(run_dir / model)).num_parameters() > 0
    assert (run_dir / "summary.json").is_file()
    return run_dir, manifest, summary


def _all_final(records) -> None:
    assert all(r.status in (KEPT, REJECTED) for r in records)
    assert all(r.reject_reason for r in records if r.status == REJECTED)


def test_reduced_isheep_accounts_for_every_synthesized_instruction(ray_cluster, tmp_path):
    # One-word "instructions" pass the rules, so the noise still reaches answer and assess.
    extra = ["recipe.synthesize_per_round=16", "recipe.instruction_min_words=1"]
    run_dir, manifest, summary = _run("isheep_demo", tmp_path, extra)
    assert [s["name"] for s in manifest["steps"]] == plan_steps(
        1, RECIPES["isheep"].round_steps, meta=True
    )
    synthesis = _records(run_dir / "round1/synthesis.parquet")
    assert len(synthesis) == 16
    _all_final(synthesis)
    candidates = pq.read_table(run_dir / "round1/candidates.parquet").to_pylist()
    assert all(c["accepted"] or c["reason"] for c in candidates)
    accepted = [c["id"] for c in candidates if c["accepted"]]
    prompts = _records(run_dir / "round1/prompts.parquet")
    assert sorted(p.id for p in prompts) == sorted(accepted)
    # Every accepted instruction was answered (sampling.n times) and assessed, and each
    # answer left the filter once.
    filtered = _records(run_dir / "round1/filtered.parquet")
    answers = load_config("recipes/isheep_demo").sampling.n
    assert sorted(r.prompt_id for r in filtered) == sorted(accepted * answers)
    assert len({r.id for r in filtered}) == len(filtered)
    _all_final(filtered)
    for r in filtered:
        if r.status == KEPT:
            assert r.scores["quality"] >= 8 and r.scores["following"] >= 8
    assert summary["rounds"][1]["generated"] == len(filtered)
    assert summary["rounds"][0]["refine_acc"] is None  # eval.critique is off for I-SHEEP


def test_reduced_mistake_analysis_ablation_accounts_for_every_row(ray_cluster, tmp_path):
    # `selfevo ablate` on the mistake-analysis demo: the method, then the same round on the
    # own answers alone, from the method's warm-up (shared, not rerun).
    overrides = [*REDUCED, f"run.output_dir={tmp_path}", "run.name=reduced"]
    report = run_ablation("recipes/mistake_analysis_demo", overrides, None, lambda _: None)
    out = tmp_path / "reduced-ablation"
    assert list(report["arms"]) == ["analysis", "answers_only"]
    run_dir = out / "analysis"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == plan_steps(
        1, RECIPES["mistake_analysis"].round_steps, meta=True
    )
    assert {s["status"] for s in manifest["steps"]} == {"done"}
    filtered = _records(run_dir / "round1/filtered.parquet")
    assert len(filtered) == 32  # 16 prompts x (own answer + induced mistake)
    assert {r.meta["kind"] for r in filtered} == {"answer", "mistake"}
    _all_final(filtered)
    training = pq.read_table(run_dir / "round1/training_set.parquet").to_pylist()
    kept_analyses = sum(r.status == KEPT and r.meta["kind"] == "mistake" for r in filtered)
    assert sum(row["source"] == "analysis" for row in training) == kept_analyses
    metrics = manifest["steps"][[s["name"] for s in manifest["steps"]].index("round1.filter")]
    assert metrics["metrics"]["generated"] == 32
    # The baseline trains on the same kind of own answers and on no analysis.
    baseline = out / "answers_only"
    shared = json.loads((baseline / "manifest.json").read_text())["steps"][:3]
    assert all(step["metrics"]["shared_from"] == str(run_dir) for step in shared)
    training = pq.read_table(baseline / "round1/training_set.parquet").to_pylist()
    sources = [row["source"] for row in training]
    own = _records(baseline / "round1/filtered.parquet")
    kept_answers = sum(r.status == KEPT and r.meta["kind"] == "answer" for r in own)
    assert "analysis" not in sources and sources.count("own_answer") == kept_answers
    rows = report["comparisons"]
    assert [row["comparison"].split(":")[0] for row in rows] == ["mistake analysis"] * 3
    for name, arm in report["arms"].items():
        assert arm["summary"]["rounds"][1]["direct_acc"] is not None, name
    assert "with the analyses" in (out / "ablation.md").read_text()
