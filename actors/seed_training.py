"""Training a demo world's seed model from scratch: the stand-in for a pretrained base model.

A world's seed model is trained outside the method, by a plain PyTorch loop on gold
question/answer pairs the world supplies (its exercises, never feedback or refinement data),
and shipped with the world so that ``selfevo run`` does not spend its minutes on pretraining.
``selfevo demo seed`` reproduces it (same seed, same steps, same numbers on the same torch).

A tiny model learns such a task in a sudden jump (near 0% to over 80% held-out accuracy
within a few hundred steps), so a fixed step count lands unpredictably far up that jump. The
loop trains at a constant learning rate and stops at the first evaluation that reaches
``target_acc``: a seed that is right part of the time leaves self-evolution room to work and
gives the labeler both right and wrong answers to critique.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selfevo.records import Record

# The demo worlds' model: a 0.66 M-parameter character-level Llama.
SEED_SHAPE = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 256}


def _encode(tokenizer: Any, pairs: Sequence[tuple[Record, str]]) -> list[tuple[list, list]]:
    """(input ids, labels) of each (question, gold answer), as the trainer tokenises them."""
    from actors.train_step import tokenize_example
    from selfevo.templates import answer_messages

    rows = [
        tokenize_example(tokenizer, answer_messages(record), answer, 10**6)
        for record, answer in pairs
    ]
    return [(row["input_ids"], row["labels"]) for row in rows]


def heldout_accuracy(model_dir: str | Path, records: list[Record], num_threads: int = 2) -> float:
    """Greedy exact-match accuracy on ``records`` (which carry their gold answers)."""
    from actors.engine_hf import HFEngine
    from selfevo.evaluation import is_correct
    from selfevo.generation import GenerationParams
    from selfevo.templates import answer_messages

    engine = HFEngine(str(model_dir), num_threads=num_threads)
    outputs = engine.generate(
        [answer_messages(r) for r in records], GenerationParams(max_new_tokens=96)
    )
    right = sum(bool(is_correct(r, o[0].text)) for r, o in zip(records, outputs, strict=True))
    return right / len(records)


def _step(model: Any, optimizer: Any, batch: dict[str, Any]) -> float:
    import torch

    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _save_and_evaluate(model: Any, output: Path, heldout: list[Record], threads: int) -> float:
    model.save_pretrained(output, safe_serialization=True)
    accuracy = heldout_accuracy(output, heldout, num_threads=threads)
    model.train()
    return accuracy


def _fresh_model(output: Path, seed: int) -> tuple[Any, Any]:
    """A randomly initialised tiny Llama saved to ``output``, loaded back with its tokenizer."""
    from transformers import AutoModelForCausalLM

    from actors.models import QA_TEMPLATE, build_tiny_llama, load_tokenizer

    build_tiny_llama(
        output, **SEED_SHAPE, max_position_embeddings=512, chat_template=QA_TEMPLATE, seed=seed
    )
    return AutoModelForCausalLM.from_pretrained(output), load_tokenizer(str(output))


def _load(start_from: str | Path, output: Path) -> tuple[Any, Any]:
    """The checkpoint in ``start_from`` (copied into ``output`` first), with its tokenizer."""
    import shutil

    from transformers import AutoModelForCausalLM

    from actors.models import load_tokenizer

    if Path(start_from).resolve() != output.resolve():
        shutil.copytree(start_from, output, dirs_exist_ok=True)
    return AutoModelForCausalLM.from_pretrained(output), load_tokenizer(str(output))


def train_seed(
    output: str | Path,
    examples: Sequence[tuple[Record, str]],
    heldout: list[Record],
    *,
    steps: int = 1500,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    target_acc: float = 0.5,
    eval_from: int = 300,
    eval_every: int = 25,
    num_threads: int = 2,
    start_from: str | Path | None = None,
    emit: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a seed model on ``examples`` (question record, gold answer text) until it
    reaches ``target_acc`` greedy accuracy on ``heldout`` (or ``steps``), and save it (with
    ``seed_info.json``) to ``output``: from scratch, or on from the checkpoint in
    ``start_from`` (a curriculum's earlier stage)."""
    import torch

    from actors.train_step import collate

    torch.set_num_threads(num_threads)
    output = Path(output)
    model, tokenizer = (
        _fresh_model(output, seed) if start_from is None else _load(start_from, output)
    )
    encoded = _encode(tokenizer, examples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    warmup = max(1, steps // 20)
    history, started = [], time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * min(1.0, step / warmup)
        batch = collate(rng.sample(encoded, batch_size), tokenizer.pad_token_id, "cpu")
        loss = _step(model, optimizer, batch)
        if (step >= eval_from and step % eval_every == 0) or step == steps:
            accuracy = _save_and_evaluate(model, output, heldout, num_threads)
            history.append({"step": step, "loss": round(loss, 4), "heldout_acc": accuracy})
            emit(
                f"[seed] step {step}/{steps} loss {loss:.4f} held-out accuracy "
                f"{accuracy:.3f} ({time.perf_counter() - started:.0f}s)"
            )
            if accuracy >= target_acc:
                break
    info = {
        "shape": SEED_SHAPE,
        **dict(max_steps=steps, steps=history[-1]["step"], target_acc=target_acc),
        **dict(examples=len(examples), batch_size=batch_size, learning_rate=learning_rate),
        **dict(seed=seed, heldout_problems=len(heldout), torch=torch.__version__),
        **dict(history=history, seconds=round(time.perf_counter() - started, 1)),
    }
    (output / "seed_info.json").write_text(json.dumps(info, indent=2))
    return info
