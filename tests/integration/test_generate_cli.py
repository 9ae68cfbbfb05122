"""`selfevo generate` and `selfevo bench generate` as a user runs them."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray")

from selfevo.cli import main
from selfevo.readers import read_prompts

pytestmark = pytest.mark.integration


def test_generate_command_writes_every_prompt(ray_cluster, varied_model_dirs, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": f"What is {i} + {i}?"}) + "\n" for i in range(12)
        )
    )
    output = tmp_path / "out.jsonl"
    argv = [
        "generate",
        "--model",
        str(varied_model_dirs[0]),
        "--input",
        str(prompts),
        "--output",
        str(output),
        "--stages",
        "generate,feedback",
        "sampling.max_new_tokens=8",
        "sampling.feedback_max_new_tokens=8",
        "engine.num_engines=1",
        "sampling.n=2",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"q{i}#{k}" for i in range(12) for k in range(2))
    assert summary["kept"] + summary["rejected"] == 24
    assert all(r["status"] in ("kept", "rejected") for r in rows)
    assert (tmp_path / "out.stages" / "stages" / "1-generate").is_dir()


def test_generate_refuses_a_bad_prompt_file(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": ""}\n')
    argv = [
        "generate",
        "--model",
        "unused",
        "--input",
        str(prompts),
        "--output",
        str(tmp_path / "o.jsonl"),
    ]
    assert main(argv) == 1
    assert "empty field 'prompt'" in capsys.readouterr().err


def test_engine_bench_checks_outputs_are_identical(capsys):
    # Correctness of the bench itself; its speed figures come from `selfevo bench generate`.
    assert (
        main(
            [
                "bench",
                "generate",
                "--json",
                "--engine-only",
                "--prompts",
                "24",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    engine = report["engine"]
    assert engine["prompts"] == 24 and engine["outputs_identical"] and engine["mismatches"] == 0
    assert engine["batched_tokens_per_s"] > 0 and engine["naive_tokens_per_s"] > 0
    kv_cache = report["kv_cache"]  # the static KV cache decodes what the dynamic one does
    assert kv_cache["prompts"] == 24 and kv_cache["outputs_identical"]
    assert kv_cache["static_tokens_per_s"] > 0 and kv_cache["dynamic_tokens_per_s"] > 0


def test_generated_jsonl_reads_back_as_records(ray_cluster, varied_model_dirs, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "only", "prompt": "Hi"}) + "\n")
    output = tmp_path / "o.parquet"
    argv = [
        "generate",
        "--model",
        str(varied_model_dirs[0]),
        "--input",
        str(prompts),
        "--output",
        str(output),
        "--stages",
        "generate",
        "sampling.max_new_tokens=4",
        "sampling.n=1",
    ]
    assert main(argv) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(output).column("id").to_pylist() == ["only#0"]
    assert read_prompts(prompts).records[0].id == "only"


def test_whole_bench_reports_scaling_and_vllm_in_one_run(ray_cluster, capsys):
    # Shape and correctness only: the figures come from a full `selfevo bench generate`.
    argv = ["bench", "generate", "--json", "--prompts", "24", "--max-new-tokens", "8"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    by_engines = report["pipeline"]["by_engines"]
    assert set(by_engines) == {"1", "2"}
    for engines, entry in by_engines.items():
        assert entry["rows"] == 24 and entry["engines"] == int(engines)
        assert len(entry["per_engine_busy_seconds"]) == int(engines)
        assert entry["wall_seconds"] > 0 and entry["engine_busy_seconds"] > 0
        # Seconds are rounded to the millisecond: a tiny run's busy time is ~0.07 s.
        assert entry["wall_over_busy"] == pytest.approx(
            entry["wall_seconds"] / entry["engine_busy_seconds"], rel=0.02
        )
    assert report["pipeline"]["scaling"] == pytest.approx(
        by_engines["2"]["rows_per_s"] / by_engines["1"]["rows_per_s"], rel=0.01
    )
    vllm = report["vllm"]
    if "skipped" not in vllm:
        assert vllm["outputs_identical_hf_vllm"] and vllm["outputs_identical_pool_direct"]
        assert vllm["pool_tokens_per_s"] > 0 and vllm["hf_tokens_per_s"] > 0
