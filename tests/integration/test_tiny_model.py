"""The tiny-model fixture through the real loading path: from_pretrained on a local dir."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from actors.models import load_model, load_tokenizer
from selfevo.templates import build_messages, render_prompt, render_training_example

pytestmark = pytest.mark.integration


def test_checkpoint_is_safetensors_and_loads_through_auto_classes(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (tiny_model_dir / "model.safetensors").is_file()
    assert not list(tiny_model_dir.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)


def test_char_tokenizer_round_trips_text(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    text = "Tom has 1,234 apples; he eats -5.\n#### 1229"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>"


def test_model_generates_and_is_deterministic_greedy(tiny_model_dir):
    import torch

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir))
    batch = tokenizer(["1+1=", "a longer prompt"], return_tensors="pt", padding=True)
    with torch.no_grad():
        first = model.generate(
            **batch, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        second = model.generate(
            **batch, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    assert first.shape[1] == batch["input_ids"].shape[1] + 6
    assert torch.equal(first, second)


def test_chat_template_prompt_is_the_prefix_of_the_training_text(tiny_chat_model_dir):
    tokenizer = load_tokenizer(str(tiny_chat_model_dir))
    messages = build_messages("answer", task="math", question="What is 2+3?")
    prompt = render_prompt(messages, tokenizer)
    assert prompt.startswith("<|user|>\n") and prompt.endswith("<|assistant|>\n")
    train_prompt, target = render_training_example(messages, "2+3=5\nThe answer is 5.", tokenizer)
    assert train_prompt == prompt
    assert target == "2+3=5\nThe answer is 5.</s>\n"
    # Token level: the prompt's tokens are a prefix of the full example's tokens.
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(train_prompt + target, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids


def test_plain_model_training_target_ends_with_eos(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    _, target = render_training_example(build_messages("answer", question="hi"), "hello", tokenizer)
    assert target == "hello</s>"


def test_pickled_checkpoints_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="safetensors only"):
        load_model(str(tmp_path))


def test_mfu_flops_count_every_parameter_of_a_gqa_model_with_untied_embeddings(tmp_path):
    """The trainer's FLOPs per token rest on the planner's count, equal to torch's own."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from actors.train_step import flops_per_token
    from selfevo.training import train_flops_per_token

    config = LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=96, vocab_size=50, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path)
    torch_count = sum(p.numel() for p in model.parameters())
    expected = train_flops_per_token(torch_count, 2, 64, seq_len=128)
    assert flops_per_token(str(tmp_path), 128) == expected


def test_the_worker_config_counts_flops_only_where_mfu_is_reported(tiny_model_dir, tmp_path):
    """Counting FLOPs reads the model's config through transformers (seconds of imports in
    the driver before its first fine-tuning), so a CPU run, which reports no MFU, skips it."""
    from actors.train_step import flops_per_token, loop_config
    from selfevo.config import load_config

    model = str(tiny_model_dir)
    cpu = loop_config(load_config("demo"), model, model, tmp_path, 10)
    assert (cpu["peak_flops"], cpu["flops_per_token"]) == (0.0, 0.0)
    gpu_config = load_config("demo", ["train.use_gpu=true", "train.gpu_peak_tflops=989"])
    gpu = loop_config(gpu_config, model, model, tmp_path, 10)
    assert gpu["peak_flops"] == 989e12
    assert gpu["flops_per_token"] == flops_per_token(model, gpu_config.model.max_seq_len) > 0
