"""`selfevo eval` and `selfevo refine` on the shipped demo checkpoint (a trained seed model)."""

import json

from selfevo.cli import main
from selfevo.division_world import SEED_CHECKPOINT as SEED_DIR
from selfevo.division_world.problems import make_problems


def test_eval_reports_direct_refine_and_sc_with_intervals(ray_cluster, tmp_path, capsys):
    code = main(
        [
            "eval",
            "--model",
            str(SEED_DIR),
            "--output",
            str(tmp_path / "eval"),
            "eval.num_problems=40",
            "eval.sc_samples=2",
            "eval.refine_max_iters=1",
        ]
    )
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["problems"] == 40
    for key in ("direct", "refine", "sc"):
        low, high = metrics[key]["ci"]
        assert metrics[key]["n"] == 40 and low <= metrics[key]["acc"] <= high
    # The seed is right part of the time on held-out problems (it was trained to 40%).
    assert 0.2 <= metrics["direct"]["acc"] <= 0.85
    assert (tmp_path / "eval" / "refine" / "output.parquet").is_file()


def test_refine_writes_one_line_per_prompt_with_every_sample(ray_cluster, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    problems = make_problems("pool", 6)
    prompts.write_text(
        "".join(
            json.dumps({"id": p.id, "prompt": p.question, "gold": str(p.answer)}) + "\n"
            for p in problems
        )
    )
    output = tmp_path / "refined.jsonl"
    code = main(
        [
            "refine",
            "--model",
            str(SEED_DIR),
            "--input",
            str(prompts),
            "--output",
            str(output),
            "--samples",
            "3",
            "--max-iters",
            "1",
            "recipe.task=division",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prompts"] == 6 and summary["samples"] == 3
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in rows] == [p.id for p in problems]
    for row in rows:
        assert len(row["samples"]) == 3
        assert all(s["response"] is not None for s in row["samples"])
        assert all(s["refinements"] <= 1 for s in row["samples"])
        # The output is the majority of the (refined) samples' answers.
        if row["answer"] is not None:
            assert row["output"] == f"The answer is {row['answer']}."
