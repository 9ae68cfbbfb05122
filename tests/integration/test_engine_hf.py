"""The HF engine: batching never changes greedy results; weights reload exactly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from actors.engine_hf import (  # noqa: E402
    EngineAsleepError,
    HFEngine,
    batch_static_cache,
    generate_unbatched,
)
from actors.engines import build_engine, choose_backend  # noqa: E402
from selfevo.generation import LENGTH, STOP, GenerationParams  # noqa: E402
from tests.conftest import arithmetic_prompts  # noqa: E402

pytestmark = pytest.mark.integration
GREEDY = GenerationParams(max_new_tokens=24)


def test_greedy_batched_equals_model_generate_prompt_by_prompt(varied_model_dirs):
    engine = HFEngine(str(varied_model_dirs[0]), max_batch_size=16)
    prompts = arithmetic_prompts(64)
    batched = engine.generate(prompts, GREEDY)
    texts = [c[0].text for c in batched]
    assert len(set(texts)) > 50, "outputs should vary, or the comparison proves little"
    for prompt, text in zip(prompts, texts, strict=True):
        assert text == generate_unbatched(engine, prompt, 24).text
    assert {c[0].finish_reason for c in batched} <= {STOP, LENGTH}
    stats = engine.get_stats()
    assert stats.prompts == 64 and stats.output_tokens > 0 and stats.busy_seconds > 0


def test_results_come_back_in_prompt_order_whatever_the_batch_size(varied_model_dirs):
    prompts = arithmetic_prompts(20, seed=3)
    small = HFEngine(str(varied_model_dirs[0]), max_batch_size=3).generate(prompts, GREEDY)
    large = HFEngine(str(varied_model_dirs[0]), max_batch_size=64).generate(prompts, GREEDY)
    assert [c[0].text for c in small] == [c[0].text for c in large]


def test_load_weights_equals_a_fresh_engine(varied_model_dirs):
    first, second = (str(p) for p in varied_model_dirs)
    prompts = arithmetic_prompts(16, seed=5)
    engine = HFEngine(first)
    before = [c[0].text for c in engine.generate(prompts, GREEDY)]
    assert engine.load_weights(second) == 1
    after = [c[0].text for c in engine.generate(prompts, GREEDY)]
    fresh = [c[0].text for c in HFEngine(second).generate(prompts, GREEDY)]
    assert after == fresh and after != before


def test_load_state_dict_equals_a_fresh_engine(varied_model_dirs):
    from safetensors.torch import load_file

    first, second = (str(p) for p in varied_model_dirs)
    prompts = arithmetic_prompts(8, seed=6)
    engine = HFEngine(first)
    engine.load_state_dict(load_file(f"{second}/model.safetensors"))
    fresh = HFEngine(second)
    assert [c[0].text for c in engine.generate(prompts, GREEDY)] == [
        c[0].text for c in fresh.generate(prompts, GREEDY)
    ]
    with pytest.raises(ValueError, match="do not fit"):
        engine.load_state_dict({"nope": torch.zeros(1)})


def test_load_lora_equals_the_merged_checkpoint(varied_model_dirs, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = str(varied_model_dirs[0])
    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.merge_and_unload().save_pretrained(tmp_path / "merged")
    engine = HFEngine(base)
    prompts = arithmetic_prompts(8, seed=7)
    plain = [c[0].text for c in engine.generate(prompts, GREEDY)]
    engine.load_lora(str(tmp_path / "adapter"))
    with_adapter = [c[0].text for c in engine.generate(prompts, GREEDY)]
    merged = HFEngine(str(tmp_path / "merged"), tokenizer=base)
    assert with_adapter == [c[0].text for c in merged.generate(prompts, GREEDY)]
    assert with_adapter != plain


def test_sleep_refuses_generation_until_woken(varied_model_dirs):
    engine = HFEngine(str(varied_model_dirs[0]))
    engine.sleep()
    with pytest.raises(EngineAsleepError):
        engine.generate(["hi"], GREEDY)
    engine.wake()
    assert engine.generate(["hi"], GREEDY)[0][0].output_tokens > 0


def test_stop_strings_cut_the_text(varied_model_dirs):
    engine = HFEngine(str(varied_model_dirs[0]))
    prompts = arithmetic_prompts(16, seed=8)
    free = engine.generate(prompts, GenerationParams(max_new_tokens=24))
    # Stop on the 4th character of each free output's text: every output must end before it.
    stops = tuple({c[0].text[3] for c in free if len(c[0].text) > 4})
    stopped = engine.generate(prompts, GenerationParams(max_new_tokens=24, stop=stops))
    for completion in (c[0] for c in stopped):
        assert not any(s in completion.text for s in stops)
    assert any(c[0].finish_reason == STOP for c in stopped)


def test_sampling_is_seeded_and_returns_n(varied_model_dirs):
    engine = HFEngine(str(varied_model_dirs[0]))
    params = GenerationParams(temperature=1.0, top_p=0.9, n=3, max_new_tokens=12, seed=11)
    first = engine.generate(["What is 1+1?", "Hi"], params)
    second = engine.generate(["What is 1+1?", "Hi"], params)
    assert [len(c) for c in first] == [3, 3]
    assert [[x.text for x in c] for c in first] == [[x.text for x in c] for c in second]
    assert len({x.text for x in first[0]}) > 1


def test_backend_choice():
    assert choose_backend("auto", vllm_ok=True, gpu_ok=True) == "vllm"
    assert choose_backend("auto", vllm_ok=True, gpu_ok=False) == "hf"
    assert choose_backend("auto", vllm_ok=False, gpu_ok=True) == "hf"
    assert choose_backend("hf", vllm_ok=True, gpu_ok=True) == "hf"
    with pytest.raises(ValueError, match="unknown engine backend"):
        build_engine("tpu", model="x")


def test_vllm_engine_without_vllm_says_how_to_get_it(monkeypatch):
    import actors.engine_vllm as engine_vllm

    monkeypatch.setattr(engine_vllm, "vllm", None)  # as on a machine without either build
    monkeypatch.setattr(engine_vllm, "VLLM_IMPORT_ERROR", "No module named 'vllm'")
    with pytest.raises(RuntimeError, match=r"No module named 'vllm'.*pip install -e '\.\[vllm\]'"):
        engine_vllm.VLLMEngine("any-model")


def test_concurrent_requests_are_merged_and_answer_as_alone(varied_model_dirs):
    import asyncio

    from actors.batching import RequestBatcher

    engine = HFEngine(str(varied_model_dirs[0]), max_batch_size=16)
    prompts = arithmetic_prompts(12, seed=4)
    alone = [[c[0].text for c in engine.generate(prompts[i : i + 3], GREEDY)] for i in (0, 3, 6)]
    sampled = GenerationParams(max_new_tokens=12, temperature=1.0, seed=7)
    sampled_alone = [c[0].text for c in engine.generate(prompts[9:], sampled)]

    async def together():
        batcher = RequestBatcher(engine)
        calls = [batcher.agenerate(prompts[i : i + 3], GREEDY) for i in (0, 3, 6)]
        calls.append(batcher.agenerate(prompts[9:], sampled))
        results = await asyncio.gather(*calls)
        return results, batcher.merged_batches

    results, merged = asyncio.run(together())
    assert [[c[0].text for c in r] for r in results[:3]] == alone
    # A seeded sampled request runs alone, so it repeats exactly whatever arrived with it.
    assert [c[0].text for c in results[3]] == sampled_alone
    assert merged >= 1


def _texts(results) -> list[str]:
    return [c.text for completions in results for c in completions]


def test_the_static_cache_hands_attention_only_the_written_positions(varied_model_dirs):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(varied_model_dirs[0]))
    cache = batch_static_cache(config, max_cache_len=10, written_prefix=True)
    heads, dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    prompt = torch.randn(2, heads, 3, dim)
    keys, values = cache.update(prompt, prompt + 1, layer_idx=0)
    assert keys.shape[-2] == values.shape[-2] == 3 and torch.equal(keys, prompt)
    assert cache.get_mask_sizes(1, layer_idx=0) == (4, 0)  # the next token's mask: 3 + 1
    step = torch.randn(2, heads, 1, dim)
    keys, _ = cache.update(step, step, layer_idx=0)
    assert keys.shape[-2] == 4 and torch.equal(keys[:, :, 3:], step)
    assert cache.layers[0].keys.shape[-2] == 10  # allocated once, written in place


def test_sliding_window_layers_keep_their_kind_and_decode_as_the_dynamic_cache(
    varied_model_dirs, tmp_path
):
    """A model of a full and a sliding-window layer (Qwen2's max_window_layers): only the full
    one reads the written prefix, and greedy and sampled text equal the dynamic cache's."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(varied_model_dirs[0]))
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
        max_window_layers=1, sliding_window=8, initializer_range=0.3, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cache = batch_static_cache(config, max_cache_len=32, written_prefix=True)
    kinds = [type(layer).__name__ for layer in cache.layers]
    assert kinds == ["WrittenPrefixLayer", "StaticSlidingWindowLayer"], kinds
    # On CPU, where the written prefix is used (on CUDA "static" is transformers' own).
    static = HFEngine(str(tmp_path), kv_cache="static", device="cpu")
    dynamic = HFEngine(str(tmp_path), kv_cache="dynamic", device="cpu")
    prompts = arithmetic_prompts(12, seed=4)  # longer than the window: it slides
    sampled = GenerationParams(max_new_tokens=16, temperature=0.7, n=2, seed=3)
    for params in (GREEDY, sampled):
        texts = _texts(static.generate(prompts, params))
        assert len(set(texts)) > 6
        assert texts == _texts(dynamic.generate(prompts, params))


def test_the_static_kv_cache_decodes_as_the_dynamic_one_and_steps_aside(varied_model_dirs):
    model = str(varied_model_dirs[0])
    prompts = arithmetic_prompts(32)
    static = HFEngine(model, kv_cache="static", device="cpu")
    dynamic = HFEngine(model, kv_cache="dynamic", device="cpu")
    sampled = GenerationParams(max_new_tokens=24, temperature=0.7, n=2, seed=5)
    for params in (GREEDY, sampled):
        assert _texts(static.generate(prompts, params)) == _texts(dynamic.generate(prompts, params))
    auto = HFEngine(model)
    assert auto._static_cache()  # on CPU, a model transformers builds
    # A checkpoint that names its own cache keeps it: transformers refuses a cache of ours too.
    for engine in (auto, static):
        engine.model.generation_config.cache_implementation = "dynamic"
    assert not auto._static_cache()
    assert _texts(auto.generate(prompts[:4], GREEDY)) == _texts(
        dynamic.generate(prompts[:4], GREEDY)
    )
    with pytest.raises(ValueError, match="cache_implementation"):
        static.generate(prompts[:4], GREEDY)
    with pytest.raises(ValueError, match="kv_cache='paged'"):
        HFEngine(model, kv_cache="paged")
