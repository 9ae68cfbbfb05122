"""``selfevo bench gpu`` on CPU (tiny shapes), run the way a bare GPU machine runs it.

The GPU machine has no Ray and no vLLM, so the bench goes through ``launch/gpu_bench.sh`` with
a Python that refuses to import them (and selfevo's other dependencies missing there): the
engine, the ZeRO-3 step, the handoff and the planner check must not touch them. The figures
are CPU ones; what is checked is that every field is there and means what it says.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# selfevo's dependencies that the GPU machine lacks and the launch script does not bring.
ABSENT_THERE = ("ray", "vllm", "rouge_score", "fastapi", "starlette", "uvicorn", "openai")
# A python that behaves as if they were not installed when it runs ``-m MODULE ...``.
_NO_RAY = f"""
import os, runpy, sys
if sys.argv[1] != "-m":  # python --version and the like
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
sys.modules.update(dict.fromkeys({ABSENT_THERE!r}))  # "import ray" now raises ImportError
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_gpu")
    (tmp / "no_ray.py").write_text(_NO_RAY)
    python = tmp / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {tmp / "no_ray.py"} "$@"\n')
    python.chmod(0o755)
    refused = subprocess.run([str(python), "-m", "ray"], capture_output=True, text=True)
    assert refused.returncode != 0 and "ImportError" in refused.stderr  # the stand-in holds
    out = tmp / "out"
    done = subprocess.run(
        [str(ROOT / "launch" / "gpu_bench.sh"), str(tmp / "no_wheels"), "--device", "cpu"],
        cwd=tmp,  # the script finds its checkout itself
        env={**os.environ, "PYTHON": str(python), "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "bench_gpu.json").read_text()), (out / "bench_gpu.txt").read_text()


def test_every_part_reports(report):
    data, summary = report
    assert set(data) >= {"device", "model", "generation", "training", "handoff", "memory"}
    assert data["device"] == "cpu" and data["dtype"] == "float32"
    by_batch = data["generation"]["by_batch_size"]
    assert set(by_batch) == {"1", "8"}
    assert all(
        entry["tokens_per_s"] > 0 and entry["output_tokens"] > 0 for entry in by_batch.values()
    )
    assert "batch 8:" in summary and "MFU: give --peak-tflops" in summary
    # The versions a figure was measured with travel with it.
    assert (data["transformers"], data["deepspeed"]) == (
        version("transformers"),
        version("deepspeed"),
    )
    assert f"transformers {data['transformers']}, DeepSpeed {data['deepspeed']}" in summary


def test_the_training_step_is_a_real_zero3_step(report):
    training = report[0]["training"]
    assert training["zero_stage"] == 3 and training["tokens_per_s"] > 0
    vocab = report[0]["model"]["vocab_size"]
    # A random model's first loss is about ln(vocab); the next steps move it.
    assert abs(training["losses"][0] - math.log(vocab)) < 0.3
    assert len(set(training["losses"])) == len(training["losses"])
    assert training["flops_per_token"] >= 6 * report[0]["model"]["num_params"]
    assert training["mfu"] is None  # no --peak-tflops given


def test_the_handoff_gives_the_engine_the_trained_weights(report):
    handoff = report[0]["handoff"]
    assert handoff["engine_changed"] and handoff["engine_has_trained_weights"]
    for path in ("in_memory", "checkpoint"):
        assert handoff[path]["max_abs_logit_diff_vs_trainer"] <= 1e-4
    assert handoff["reload_max_abs_logit_diff"] <= 1e-4
    params = report[0]["model"]["num_params"]
    # fp32 on CPU: 4 bytes a parameter, the tied lm_head stored once.
    assert handoff["weight_gib"] == pytest.approx(params * 4 / 2**30, rel=1e-3)
    assert handoff["checkpoint"]["file_gib"] >= handoff["weight_gib"] * 0.7
    assert handoff["in_memory"]["total_seconds"] > 0
    assert handoff["checkpoint"]["engine_load_seconds"] > 0


def test_memory_is_set_against_the_planners_formulas(report):
    memory, params = report[0]["memory"], report[0]["model"]["num_params"]
    engine, trainer = memory["engine"], memory["trainer"]
    assert engine["predicted_weights_gib"] == pytest.approx(params * 4 / 2**30, rel=1e-3)
    assert trainer["predicted_states_gib"] == pytest.approx(params * 16 / 2**30, rel=1e-3)
    for entry in (engine, trainer):
        assert entry["measured_peak_gib"] > 0 and entry["reserved_peak_gib"] is None  # CPU
        assert entry["measured_over_predicted"] == pytest.approx(
            entry["measured_peak_gib"] / entry["predicted_gib"], rel=0.01
        )
