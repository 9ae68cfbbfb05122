"""``selfevo bench train``: training throughput (and MFU on GPU) for a model size and ZeRO stage.

Builds a random Llama of the requested size and a synthetic SFT set, trains ``steps`` steps
through the real path (Ray Train + DeepSpeed), and reports the median tokens/s of the steps
after the first (which pays for start-up).
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

from actors.models import build_tiny_llama
from actors.runtime import init_ray
from actors.trainer import train, write_examples
from selfevo.config import load_config
from selfevo.records import Message
from selfevo.training import TrainExample


def _synthetic_examples(count: int, seq_len: int) -> list[TrainExample]:
    """Random digit strings sized so a prompt and its answer fill about ``seq_len`` tokens."""
    rng = random.Random(0)
    return [
        TrainExample(
            str(i),
            (Message("user", "".join(rng.choice("0123456789+= ") for _ in range(seq_len // 2))),),
            "".join(rng.choice("0123456789") for _ in range(seq_len // 2 - 40)),
        )
        for i in range(count)
    ]


def run(
    zero_stage: int = 2,
    workers: int = 2,
    hidden_size: int = 256,
    num_layers: int = 4,
    steps: int = 12,
    micro_batch: int = 8,
    seq_len: int = 128,
    use_gpu: bool = False,
    peak_tflops: float = 0.0,
) -> dict[str, Any]:
    examples = _synthetic_examples(steps * micro_batch * workers, seq_len)
    overrides = [
        f"train.zero_stage={zero_stage}",
        f"train.num_workers={workers}",
        f"train.micro_batch_size={micro_batch}",
        "train.gradient_accumulation_steps=1",
        f"train.max_steps={steps}",
        f"train.use_gpu={str(use_gpu).lower()}",
        f"train.gpu_peak_tflops={peak_tflops}",
        f"model.max_seq_len={seq_len}",
        "train.epochs=1",
        f"train.cpus_per_worker={1 if use_gpu else 0.5}",
    ]
    config = load_config("demo", overrides)
    init_ray(config.cluster)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_llama(
            Path(tmp) / "model",
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=max(1, hidden_size // 64),
            intermediate_size=4 * hidden_size,
        )
        data = write_examples(examples, Path(tmp) / "data.parquet")
        summary = train(config, data, str(model), Path(tmp) / "out")
        metrics = [
            json.loads(line)
            for line in (Path(tmp) / "out" / "metrics.jsonl").read_text().splitlines()
        ]
    steady = metrics[1:] or metrics
    report: dict[str, Any] = {
        "zero_stage": zero_stage,
        "workers": workers,
        "model": {"hidden_size": hidden_size, "num_layers": num_layers},
        "steps": summary.steps,
        "tokens_per_s": round(statistics.median(m["tokens_per_s"] for m in steady), 1),
        "final_loss": summary.final_loss,
        "wall_seconds": round(summary.wall_seconds, 1),
    }
    if use_gpu and "mfu" in steady[0]:
        report["mfu"] = round(statistics.median(m["mfu"] for m in steady), 4)
    return report
