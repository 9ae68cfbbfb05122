"""The demo world's seed model: a tiny Llama taught arithmetic from scratch.

It stands in for the pretrained base model a SELF run starts from, so it is trained outside
the method: a plain PyTorch loop on gold question/solution pairs (the ``seed`` split), with
no feedback or refinement data. The project ships the result in ``seed_checkpoint/`` so that
``selfevo run`` does not spend its ten minutes on pretraining;
``selfevo demo seed --output DIR`` reproduces it (same seed, same steps, same numbers on the
same torch build).

A tiny model learns this task in a sudden jump (near 0% to over 80% held-out accuracy within
a few hundred steps), so a fixed step count lands unpredictably far up that jump. The loop
instead trains at a constant learning rate and stops at the first evaluation that reaches
``target_acc``: a seed that is right about half the time leaves self-evolution room to work
and gives the labeler both right and wrong answers to critique.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfevo.demo_world.problems import make_problems

SEED_SHAPE = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 256}


def _encode(tokenizer: Any, problems: list) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each problem's gold solution, as the trainer tokenises them."""
    from actors.train_step import tokenize_example
    from selfevo.templates import answer_messages

    rows = [
        tokenize_example(tokenizer, answer_messages(p.to_record()), p.solution(), 10**6)
        for p in problems
    ]
    return [(row["input_ids"], row["labels"]) for row in rows]


def heldout_accuracy(model_dir: str | Path, count: int = 300, num_threads: int = 2) -> float:
    """Greedy exact-match accuracy on the first ``count`` held-out problems."""
    from actors.engine_hf import HFEngine
    from selfevo.evaluation import is_correct
    from selfevo.generation import GenerationParams
    from selfevo.templates import answer_messages

    engine = HFEngine(str(model_dir), num_threads=num_threads)
    records = [p.to_record() for p in make_problems("heldout", count)]
    outputs = engine.generate(
        [answer_messages(r) for r in records], GenerationParams(max_new_tokens=96)
    )
    return (
        sum(bool(is_correct(r, o[0].text)) for r, o in zip(records, outputs, strict=True)) / count
    )


def _step(model: Any, optimizer: Any, batch: dict[str, Any]) -> float:
    import torch

    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _save_and_evaluate(model: Any, output: Path, num_threads: int) -> float:
    model.save_pretrained(output, safe_serialization=True)
    accuracy = heldout_accuracy(output, num_threads=num_threads)
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


def train_seed(
    output: str | Path,
    *,
    steps: int = 1500,
    problems: int = 4000,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    target_acc: float = 0.5,
    eval_from: int = 300,
    eval_every: int = 25,
    num_threads: int = 2,
    emit: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the seed model from scratch until it reaches ``target_acc`` held-out accuracy
    (or ``steps``), and save it (with ``seed_info.json``) to ``output``."""
    import torch

    from actors.train_step import collate

    torch.set_num_threads(num_threads)
    output = Path(output)
    model, tokenizer = _fresh_model(output, seed)
    examples = _encode(tokenizer, make_problems("seed", problems, seed=seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    warmup = max(1, steps // 20)
    history, started = [], time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * min(1.0, step / warmup)
        loss = _step(
            model,
            optimizer,
            collate(rng.sample(examples, batch_size), tokenizer.pad_token_id, "cpu"),
        )
        if (step >= eval_from and step % eval_every == 0) or step == steps:
            accuracy = _save_and_evaluate(model, output, num_threads)
            history.append({"step": step, "loss": round(loss, 4), "heldout_acc": accuracy})
            emit(
                f"[seed] step {step}/{steps} loss {loss:.4f} held-out accuracy "
                f"{accuracy:.3f} ({time.perf_counter() - started:.0f}s)"
            )
            if accuracy >= target_acc:
                break
    info = {
        "shape": SEED_SHAPE,
        "max_steps": steps,
        "steps": history[-1]["step"],
        "target_acc": target_acc,
        **dict(problems=problems, batch_size=batch_size, learning_rate=learning_rate, seed=seed),
        "torch": torch.__version__,
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (output / "seed_info.json").write_text(json.dumps(info, indent=2))
    return info
