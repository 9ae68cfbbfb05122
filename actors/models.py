"""Loading models and tokenizers, and building tiny ones from scratch.

:func:`load_model` and :func:`load_tokenizer` are the one loading path for every engine and
trainer: ``from_pretrained`` on a hub name or a local directory, safetensors only (pickled
``.bin`` weights are refused, since unpickling runs arbitrary code).

:func:`build_tiny_llama` makes a small Llama-style model and a character-level tokenizer from
nothing but a config, and saves them as an ordinary Hugging Face checkpoint. Tests, and the
demo world's seed model, use it: nothing is downloaded.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

# Every printable ASCII character: enough for arithmetic word problems and the templates.
CHAR_VOCAB = string.printable
SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}

# A small ChatML-style template for the chat-template code path in tests.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# The demo world's compact template: a character model pays for every header character.
QA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}Q: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}A: {{ message['content'] }}</s>\n"
    "{% else %}{{ message['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}A: {% endif %}"
)


def build_char_tokenizer(
    chars: str = CHAR_VOCAB, chat_template: str | None = None, vocab_size: int | None = None
) -> Any:
    """A character-level fast tokenizer: one token per character plus four special tokens.

    ``vocab_size`` pads the vocabulary with filler tokens (``<unused7>``) that text never
    encodes to but ids decode to: a model with a real-sized embedding (128 k rows) then
    decodes whatever it generates.

    Returns:
        A ``PreTrainedTokenizerFast`` that ``save_pretrained`` writes as ``tokenizer.json``.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: i for i, token in enumerate(specials)}
    for char in dict.fromkeys(chars):
        vocab.setdefault(char, len(vocab))
    for filler in range(len(vocab), vocab_size or 0):
        vocab[f"<unused{filler}>"] = filler
    # A BPE model with no merges splits text into single characters; Fuse joins them back.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk"]))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"],
        pad_token=SPECIAL_TOKENS["pad"],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_llama(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 1024,
    chat_template: str | None = None,
    initializer_range: float = 0.02,
    seed: int = 0,
    num_kv_heads: int | None = None,
    vocab_size: int | None = None,
    tie_word_embeddings: bool = True,
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """Build a randomly initialised Llama with a char tokenizer and save it to ``out_dir``.

    The defaults give about 0.1 M parameters. A random model with the usual
    ``initializer_range`` of 0.02 repeats one character; tests that compare generations pass a
    larger one (e.g. 0.3) so that outputs vary from prompt to prompt. The checkpoint is
    written as safetensors and loads through ``AutoModelForCausalLM.from_pretrained(out_dir)``.
    ``vocab_size``, ``num_kv_heads``, ``dtype`` and ``device`` build real-sized shapes (the GPU
    bench's 1 B Llama is initialised on the GPU and saved in bf16).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_char_tokenizer(chat_template=chat_template, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _check_safetensors(name_or_path: str) -> None:
    path = Path(name_or_path)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(
            p.name for p in path.glob("*.pt")
        )
        detail = f" (found {', '.join(pickled)})" if pickled else ""
        raise ValueError(
            f"{path}: no .safetensors weights{detail}. selfevo loads safetensors only; convert a "
            "trusted pickled checkpoint with model.save_pretrained(dir, safe_serialization=True)."
        )


def adapter_checkpoint(path: str | Path) -> tuple[str, str] | None:
    """``(base, adapter_dir)`` when ``path`` holds a LoRA adapter and no model weights.

    That is what training with ``train.lora.merge=false`` writes (``hf/adapter/``); the base is
    the model the adapter was trained on, as peft recorded it.
    """
    import json

    path = Path(path)
    config = path / "adapter" / "adapter_config.json"
    if not path.is_dir() or any(path.glob("*.safetensors")) or not config.is_file():
        return None
    return json.loads(config.read_text())["base_model_name_or_path"], str(config.parent)


def full_weights(path: str | Path) -> str:
    """A checkpoint with model weights for ``path``: itself, or for an adapter-only checkpoint
    its adapter merged into its base, written once to ``<path>/merged/``.

    Training starts from full weights, so each round's adapter sits on one full checkpoint and
    an engine serves it as one LoRA adapter (vLLM cannot stack adapters).
    """
    plan = adapter_checkpoint(path)
    if plan is None:
        return str(path)
    merged = Path(path) / "merged"
    if not merged.is_dir():
        import os
        import shutil
        import tempfile

        from peft import PeftModel

        base, adapter = plan
        model = PeftModel.from_pretrained(load_model(full_weights(base)), adapter)
        # Written aside and renamed, so a merge cut short never passes for a finished one.
        partial = Path(tempfile.mkdtemp(prefix=".merged-", dir=path))
        try:
            model.merge_and_unload().save_pretrained(partial, safe_serialization=True)
            load_tokenizer(str(path)).save_pretrained(partial)
            os.replace(partial, merged)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return str(merged)


def check_model_source(name_or_path: str, trust_remote_code: bool = False) -> None:
    """Refuse, in the caller's process, a model that is neither a local checkpoint nor a hub id
    whose config loads (from the local cache, or the hub when online).

    Called before any engine actor starts, so a typo fails at once, naming the path, instead of
    inside an actor a minute later.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model checkpoint (no config.json)")
        _check_safetensors(str(path))
        return
    looks_like_path = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if looks_like_path or path.exists():
        raise FileNotFoundError(f"{name_or_path}: no such model directory")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a local model directory nor a hub model whose config "
            f"loads here ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a hub model or local directory, with a pad token and left padding."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def torch_dtype(name: str, device: str) -> Any:
    """``auto`` is bfloat16 on CUDA and float32 on CPU."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def load_model(
    name_or_path: str,
    *,
    dtype: str = "auto",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> Any:
    """A causal LM from a hub name or a local directory, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    _check_safetensors(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path,
        dtype=torch_dtype(dtype, device),
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )
    return model.to(device).eval()


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt, the same for generation and training.

    A chat template writes its own BOS, so special tokens are added only to plain text.
    """
    add_special = not getattr(tokenizer, "chat_template", None)
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]
