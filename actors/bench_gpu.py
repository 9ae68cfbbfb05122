"""``selfevo bench gpu``: the parts that run without Ray, on one device, against the planner.

For a random Llama built from a config (no download: about 1 B parameters in bf16 on a GPU,
a tiny one in fp32 on CPU so that CI keeps the command working), in one process:

* the HF engine (:class:`actors.engine_hf.HFEngine`, the engine users run) generating greedily
  at a few batch sizes: output tokens/s;
* DeepSpeed training steps through :mod:`actors.train_step` (the set-up and step function Ray
  Train's workers call) on one rank, ZeRO-3 by default: tokens/s and, given the device's peak,
  MFU (6N + attention FLOPs per token, :func:`selfevo.training.train_flops_per_token`);
* the weight handoff from the trainer to the live engine, the way rounds do it (the engine
  sleeps while the trainer runs, then wakes and loads): in memory (ZeRO-3 gather to the host,
  then ``load_state_dict``) and through the saved safetensors checkpoint (the trainer's save
  with its reload check, then the engine's ``load_weights``), against a raw read of the same
  files (just written, so from the page cache, as the engine's load was: the ratio is the
  load's own cost). After each, the engine's logits on the trainer's probe are compared with
  the trained model's (``engine_has_trained_weights``);
* peak memory of the engine and of the training, next to what ``selfevo plan``'s formulas
  (:func:`selfevo.planner.engine_memory`, :func:`selfevo.planner.trainer_memory`) predict
  for the same shapes.

Peak memory is the CUDA allocator's peak on a GPU. On CPU it is the growth of the process's
resident memory, sampled every few milliseconds: allocator caching and libraries' buffers make
it a rough figure, printed so that every field is exercised, not a check of the planner.

The planner's engine figure is vLLM's (a KV cache preallocated for ``max_num_seqs`` full-length
sequences, plus an allowance for CUDA graphs); the HF engine allocates its cache as it goes, so
the report sets the measured peak against the planner's weights + KV cache, and gives the
allowance apart.
"""

from __future__ import annotations

import copy
import os
import random
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selfevo.planner import ModelShape

GIB = 2**30


def _figure(value: float) -> float:
    """Four significant figures (the CPU run's tiny model is a few MiB: 0.001 GiB says nothing)."""
    return float(f"{value:.4g}")


def _gib(size: float) -> float:
    return _figure(size / GIB)


# Llama 3.2 1B's layout (tied embeddings, GQA): 1.24 B parameters.
LLAMA_1B = ModelShape(
    hidden_size=2048,
    num_layers=16,
    num_heads=32,
    num_kv_heads=8,
    intermediate_size=8192,
    vocab_size=128256,
    tie_embeddings=True,
)
TINY = ModelShape(
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=128,
    vocab_size=512,
    tie_embeddings=True,
)


@dataclass
class BenchShape:
    """What one run measures: model, generation and training sizes."""

    model: ModelShape
    batch_sizes: tuple[int, ...]
    prompt_tokens: int
    new_tokens: int
    train_seq_len: int
    micro_batch: int
    train_steps: int  # the first is a warm-up and is not in the figures


GPU_DEFAULTS = BenchShape(LLAMA_1B, (1, 16, 64), 128, 128, 2048, 8, 6)
CPU_DEFAULTS = BenchShape(TINY, (1, 8), 16, 8, 64, 4, 3)


class PeakMemory:
    """Peak memory a block adds: the CUDA allocator's peak on a GPU, the process's sampled
    resident memory on CPU (a rough figure: see the module docstring)."""

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0
        self.reserved_bytes: int | None = None  # the allocator's reserve (CUDA only)
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            import psutil

            process = psutil.Process()
            self._base = self._max_rss = process.memory_info().rss
            self._sampler = threading.Thread(target=self._sample, args=(process,), daemon=True)
            self._sampler.start()
        return self

    def _sample(self, process: Any) -> None:
        while not self._stop.wait(0.005):
            self._max_rss = max(self._max_rss, process.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
            self.reserved_bytes = torch.cuda.max_memory_reserved()
        else:
            self._stop.set()
            self._sampler.join()
            self.peak_bytes = self._max_rss - self._base

    @property
    def gib(self) -> float:
        return self.peak_bytes / GIB


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _config(device: str, shape: BenchShape, zero_stage: int, checkpointing: bool, peak: float):
    """The ``SelfEvoConfig`` the trainer and the planner read, for the bench's shapes."""
    from selfevo.config import load_config

    gpu = device.startswith("cuda")
    return load_config(
        "demo",
        [
            f"train.zero_stage={zero_stage}",
            "train.num_workers=1",
            f"train.micro_batch_size={shape.micro_batch}",
            "train.gradient_accumulation_steps=1",
            f"train.max_steps={shape.train_steps}",
            f"train.use_gpu={str(gpu).lower()}",
            f"train.gpu_peak_tflops={peak}",
            f"train.gradient_checkpointing={str(checkpointing).lower()}",
            "train.cpus_per_worker=2",
            "train.lora.enabled=false",
            f"model.max_seq_len={shape.train_seq_len}",
            f"model.dtype={'bfloat16' if gpu else 'float32'}",
            f"engine.max_num_seqs={max(shape.batch_sizes)}",
            "engine.tensor_parallel_size=1",
        ],
    )


def _prompts(count: int, length: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice("0123456789+-*= abcdef") for _ in range(length)) for _ in range(count)
    ]


def bench_engine(engine: Any, shape: BenchShape) -> dict[str, Any]:
    """Greedy output tokens/s at each batch size (after a warm-up batch)."""
    from selfevo.generation import GenerationParams

    engine.generate(_prompts(2, shape.prompt_tokens, 1), GenerationParams(max_new_tokens=4))
    by_batch = {}
    for batch in shape.batch_sizes:
        prompts = _prompts(batch, shape.prompt_tokens, batch)
        _sync(engine.device)
        started = time.perf_counter()
        outputs = engine.generate(prompts, GenerationParams(max_new_tokens=shape.new_tokens))
        _sync(engine.device)
        seconds = time.perf_counter() - started
        tokens = sum(c[0].output_tokens for c in outputs)
        by_batch[str(batch)] = {
            "output_tokens": tokens,
            "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1),
        }
    return by_batch


def _training_rows(shape: BenchShape, vocab: int, count: int) -> list[tuple[list[int], list[int]]]:
    """Full-length random sequences, every token a target (no padding: the step's tokens/s is
    the model's)."""
    rng = random.Random(0)
    rows = []
    for _ in range(count):
        ids = [rng.randrange(4, vocab) for _ in range(shape.train_seq_len)]
        rows.append((ids, list(ids)))
    return rows


def bench_training(worker: Any, cfg: dict[str, Any], shape: BenchShape) -> dict[str, Any]:
    """``train_steps`` optimizer steps of one full micro-batch each; the first is a warm-up."""
    from actors.train_step import flops_per_token, new_window, train_micro_batch

    vocab = worker.engine.module.config.vocab_size
    rows = _training_rows(shape, vocab, shape.micro_batch * shape.train_steps)
    seconds, losses = [], []
    for step in range(shape.train_steps):
        batch = rows[step * shape.micro_batch : (step + 1) * shape.micro_batch]
        worker.window = new_window()
        _sync(worker.device)
        started = time.perf_counter()
        train_micro_batch(worker, batch, cfg["learning_rate"])
        _sync(worker.device)
        seconds.append(time.perf_counter() - started)
        losses.append(worker.window["loss"] / max(worker.window["target_tokens"], 1.0))
    step_s = statistics.median(seconds[1:] or seconds)
    tokens_per_s = shape.micro_batch * shape.train_seq_len / step_s
    flops = flops_per_token(cfg["model"], cfg["max_seq_len"])  # the loop counts only for MFU
    return {
        "zero_stage": cfg["zero_stage"],
        "micro_batch": shape.micro_batch,
        "seq_len": shape.train_seq_len,
        "gradient_checkpointing": cfg["gradient_checkpointing"],
        "steps_timed": max(1, len(seconds) - 1),
        "first_step_seconds": round(seconds[0], 3),
        "step_seconds": round(step_s, 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "flops_per_token": flops,
        "achieved_tflops": round(tokens_per_s * flops / 1e12, 3),
        "mfu": round(tokens_per_s * flops / cfg["peak_flops"], 4) if cfg["peak_flops"] else None,
        "losses": [round(loss, 4) for loss in losses],
    }


def _timed(device: str, call: Any, *args: Any) -> tuple[Any, float]:
    _sync(device)
    started = time.perf_counter()
    result = call(*args)
    _sync(device)
    return result, time.perf_counter() - started


def _raw_read_seconds(directory: Path) -> tuple[int, float]:
    started, size = time.perf_counter(), 0
    for file in sorted(directory.glob("*.safetensors")):
        with open(file, "rb") as source:
            while chunk := source.read(64 * 2**20):
                size += len(chunk)
    return size, time.perf_counter() - started


def _engine_probe_logits(engine: Any) -> Any:
    import torch

    from actors.train_step import PROBE_TEXT

    ids = torch.tensor([engine.tokenizer(PROBE_TEXT)["input_ids"]], device=engine.device)
    with torch.inference_mode():
        return engine.model(input_ids=ids).logits.float().cpu()


def _weight_bytes(state: dict[str, Any], tied: bool) -> int:
    """Bytes of a state dict's weights, a tied lm_head (the embedding again) counted once."""
    return sum(
        t.numel() * t.element_size()
        for k, t in state.items()
        if not (tied and k == "lm_head.weight")
    )


def bench_handoff(engine: Any, worker: Any, cfg: dict[str, Any]) -> dict:
    """Trainer -> live engine, in memory and through the checkpoint. After each, the engine's
    logits on the trainer's probe must be the trained model's (the reload check's tolerance),
    and differ from the logits it had before."""
    from safetensors.torch import load_file

    from actors.train_step import consolidated_state_dict, reload_tolerance, save_hf_checkpoint

    device = engine.device
    before = _engine_probe_logits(engine)
    state, gather_s = _timed(device, consolidated_state_dict, worker.engine, cfg["zero_stage"])
    _, load_state_s = _timed(device, engine.load_state_dict, state)
    after_memory = _engine_probe_logits(engine)
    weight_bytes = _weight_bytes(state, bool(engine.model.config.tie_word_embeddings))
    del state
    summary, save_s = _timed(device, save_hf_checkpoint, worker, cfg)
    checkpoint = Path(summary["hf_checkpoint"])
    _, load_s = _timed(device, engine.load_weights, str(checkpoint))
    after_checkpoint = _engine_probe_logits(engine)
    trained = load_file(str(Path(cfg["output_dir"]) / "probe_logits.safetensors"))["logits"]
    file_bytes, raw_s = _raw_read_seconds(checkpoint)
    return {
        "weight_gib": _gib(weight_bytes),
        "in_memory": {
            "gather_seconds": round(gather_s, 3),
            "load_state_dict_seconds": round(load_state_s, 3),
            "total_seconds": round(gather_s + load_state_s, 3),
            "max_abs_logit_diff_vs_trainer": _figure(float((after_memory - trained).abs().max())),
        },
        "checkpoint": {
            "save_and_check_seconds": round(save_s, 3),
            "engine_load_seconds": round(load_s, 3),
            "file_gib": _gib(file_bytes),
            "raw_read_seconds": round(raw_s, 3),
            "raw_read_gib_per_s": round(file_bytes / GIB / raw_s, 2) if raw_s else None,
            "load_over_raw_read": round(load_s / raw_s, 2) if raw_s else None,
            "max_abs_logit_diff_vs_trainer": _figure(
                float((after_checkpoint - trained).abs().max())
            ),
        },
        "reload_max_abs_logit_diff": summary.get("reload_max_abs_logit_diff"),
        "trained_logit_scale": _figure(float(trained.abs().max())),
        "engine_changed": bool((after_checkpoint - before).abs().max() > 0),
        "engine_has_trained_weights": all(
            float((after - trained).abs().max()) <= reload_tolerance(trained, cfg["bf16"])
            for after in (after_memory, after_checkpoint)
        ),
    }


def _reserved(memory: PeakMemory) -> float | None:
    return None if memory.reserved_bytes is None else _gib(memory.reserved_bytes)


def planner_check(
    config: Any, shape: BenchShape, engine_measured: PeakMemory, train_measured: PeakMemory
) -> dict[str, Any]:
    """The planner's per-GPU figures for these shapes, next to the measured peaks (and, on a
    GPU, the allocator's peak reserve, which fragmentation adds to)."""
    engine_peak, train_peak = engine_measured.gib, train_measured.gib
    from selfevo.planner import engine_memory, trainer_memory

    model = shape.model
    engine_config = copy.deepcopy(config)
    engine_config.model.max_seq_len = shape.prompt_tokens + shape.new_tokens + 1
    engine_plan = engine_memory(model, engine_config)
    trainer_plan = trainer_memory(model, config)
    engine_predicted = engine_plan.weights_gib + engine_plan.kv_cache_gib
    return {
        "engine": {
            "measured_peak_gib": _figure(engine_peak),
            "predicted_weights_gib": _figure(engine_plan.weights_gib),
            "predicted_kv_cache_gib": _figure(engine_plan.kv_cache_gib),
            "predicted_gib": _figure(engine_predicted),
            "planner_overhead_gib": engine_plan.overhead_gib,
            "measured_over_predicted": _figure(engine_peak / engine_predicted),
            "reserved_peak_gib": _reserved(engine_measured),
        },
        "trainer": {
            "measured_peak_gib": _figure(train_peak),
            "predicted_states_gib": _figure(trainer_plan.states_gib),
            "predicted_live_params_gib": _figure(trainer_plan.live_params_gib),
            "predicted_activations_gib": _figure(trainer_plan.activations_gib),
            "predicted_gib": _figure(trainer_plan.per_gpu_gib),
            "measured_over_predicted": _figure(train_peak / trainer_plan.per_gpu_gib),
            "reserved_peak_gib": _reserved(train_measured),
        },
    }


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores)"


def resolve_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:0`` -> ``cpu`` or ``cuda:0`` (the trainer's rank 0
    takes ``cuda:0``: pick another GPU with ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda", "cuda:0"):
        raise ValueError(
            f"--device {device}: use cpu, cuda or auto (to bench another GPU, set "
            "CUDA_VISIBLE_DEVICES)"
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device here")
    return "cuda:0" if device.startswith("cuda") else device


def _random_llama(directory: Path, shape: BenchShape, dtype: str, device: str) -> Path:
    from actors.models import build_tiny_llama

    m = shape.model
    longest = max(shape.train_seq_len, shape.prompt_tokens + shape.new_tokens + 8)
    return build_tiny_llama(
        directory,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        num_kv_heads=m.num_kv_heads,
        intermediate_size=m.intermediate_size,
        vocab_size=m.vocab_size,
        tie_word_embeddings=m.tie_embeddings,
        max_position_embeddings=longest,
        dtype=dtype,
        device=device,
    )


def run(
    device: str = "auto",
    *,
    shape: BenchShape | None = None,
    peak_tflops: float = 0.0,
    zero_stage: int = 3,
    gradient_checkpointing: bool = False,
    emit: Any = print,
) -> dict[str, Any]:
    """The whole bench in this process (no Ray); returns the report."""
    import torch

    from actors.engine_hf import HFEngine
    from actors.train_step import init_single_process_group, loop_config, start_worker

    device = resolve_device(device)
    gpu = device.startswith("cuda")
    import deepspeed  # noqa: F401  (a missing wheel fails now, not after the engine's part)

    shape = shape or (GPU_DEFAULTS if gpu else CPU_DEFAULTS)
    dtype = "bfloat16" if gpu else "float32"
    config = _config(device, shape, zero_stage, gradient_checkpointing, peak_tflops)
    num_params = shape.model.num_params
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="selfevo-bench-gpu-") as tmp:
        emit(f"[bench gpu] building a random Llama of {num_params / 1e9:.3f} B parameters")
        model_dir = str(_random_llama(Path(tmp) / "model", shape, dtype, device))
        if gpu:
            torch.cuda.empty_cache()
        emit(f"[bench gpu] engine: greedy generation at batch sizes {list(shape.batch_sizes)}")
        with PeakMemory(device) as engine_memory:
            engine = HFEngine(
                model_dir, dtype=dtype, device=device, max_batch_size=max(shape.batch_sizes)
            )
            generation = bench_engine(engine, shape)
        engine.sleep()  # as in a round: the engine's weights leave the device while training
        emit(f"[bench gpu] training: ZeRO-{zero_stage}, {shape.train_steps} steps")
        init_single_process_group(gpu)
        try:
            cfg = loop_config(config, model_dir, model_dir, Path(tmp) / "train", shape.train_steps)
            with PeakMemory(device) as train_memory:
                worker = start_worker(cfg, rank=0, world=1, local_rank=0)
                training = bench_training(worker, cfg, shape)
            _, wake_s = _timed(device, engine.wake)
            emit("[bench gpu] handoff: in memory and through the checkpoint")
            handoff = bench_handoff(engine, worker, cfg)
            handoff["engine_wake_seconds"] = round(wake_s, 3)
        finally:
            torch.distributed.destroy_process_group()
    memory = planner_check(config, shape, engine_memory, train_memory)
    parts = {"training": training, "handoff": handoff, "memory": memory}
    return _report(device, dtype, shape, peak_tflops, generation, parts, started)


def _report(device, dtype, shape, peak_tflops, generation, parts, started) -> dict[str, Any]:
    import deepspeed
    import torch
    import transformers

    return {
        "device": device,
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "deepspeed": deepspeed.__version__,
        "dtype": dtype,
        "peak_tflops": peak_tflops or None,
        "model": {
            **asdict(shape.model),
            "num_params": shape.model.num_params,
        },
        "generation": {
            "prompt_tokens": shape.prompt_tokens,
            "new_tokens": shape.new_tokens,
            "by_batch_size": generation,
        },
        **parts,
        "memory_measure": "cuda allocator peak"
        if device.startswith("cuda")
        else "process RSS growth (rough)",
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def format_report(report: dict[str, Any]) -> str:
    """The lines ``selfevo bench gpu`` prints without ``--json``."""
    model, train, handoff = report["model"], report["training"], report["handoff"]
    memory = report["memory"]
    lines = [
        f"{report['device_name']} ({report['device']}, {report['dtype']}, torch "
        f"{report['torch']}, transformers {report['transformers']}, DeepSpeed "
        f"{report['deepspeed']}): random Llama, {model['num_params'] / 1e6:,.1f} M parameters",
        f"engine (HF), greedy, {report['generation']['prompt_tokens']} prompt + "
        f"{report['generation']['new_tokens']} new tokens:",
    ]
    for batch, entry in report["generation"]["by_batch_size"].items():
        lines.append(f"  batch {batch}: {entry['tokens_per_s']} output tok/s")
    mfu = f", MFU {train['mfu']}" if train["mfu"] is not None else " (MFU: give --peak-tflops)"
    lines += [
        f"training (ZeRO-{train['zero_stage']}, micro batch {train['micro_batch']} x "
        f"{train['seq_len']}): {train['tokens_per_s']} tok/s, {train['achieved_tflops']} "
        f"TFLOP/s{mfu}",
        f"handoff of {handoff['weight_gib']} GiB: in memory {handoff['in_memory']['total_seconds']}"
        f" s; checkpoint save+check {handoff['checkpoint']['save_and_check_seconds']} s, engine "
        f"load {handoff['checkpoint']['engine_load_seconds']} s ("
        f"{handoff['checkpoint']['load_over_raw_read']}x a raw read); the engine has the "
        f"trained weights after both: {handoff['engine_has_trained_weights']}",
        f"peak memory ({report['memory_measure']}) against selfevo plan's formulas:",
    ]
    for part in ("engine", "trainer"):
        entry = memory[part]
        lines.append(
            f"  {part}: measured {entry['measured_peak_gib']} GiB, predicted "
            f"{entry['predicted_gib']} GiB ({entry['measured_over_predicted']}x)"
        )
    return "\n".join(lines)
