"""Supervised fine-tuning with Ray Train and DeepSpeed ZeRO (stage 0 to 3).

The training set (a Parquet file of :class:`selfevo.training.TrainExample` rows) streams to
the workers through Ray Data (``get_dataset_shard``); each worker tokenises its batches as
they arrive, with the tokenizer it loads anyway (a separate tokenising actor cost ~8 s of
start-up per fine-tuning on CPU, more than a reduced run's training steps). The model set-up,
the step and the save are :mod:`actors.train_step`'s, which runs without Ray (``selfevo bench
gpu`` measures them in one process); this module adds what Ray Train brings: the data stream,
the workers' process group, metrics, resume checkpoints and restarts.

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
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from actors.train_step import (
    Tokenize,
    TrainWorker,
    all_reduce,
    loop_config,
    new_window,
    save_hf_checkpoint,
    start_worker,
    target_count,
    train_micro_batch,
)
from selfevo.config import SelfEvoConfig
from selfevo.training import TrainExample, learning_rate_at

DONE_FILE = "train_summary.json"
FINAL_FILE = "final_step.json"  # rank 0's last word: steps done, the checkpoint, its check
RAY_TRAIN_DIR = "ray_train"  # Ray Train's storage folder inside a training's output_dir
RESUME_PREFIX = "resume_step"
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


def _optimizer_steps(micro_batches, accumulation: int):
    """Each optimizer step's micro-batches: ``accumulation`` of them (fewer at the end of the
    data), their rows sorted by length and split back into as many.

    Which rows share a micro-batch does not change the step (each micro-batch's loss is
    divided by the whole step's target tokens), but it sets the padding: rows of a length
    pad to each other. Mixed examples of 130 to 260 tokens, 32 to a step, padded to 1.45x
    their tokens in one micro-batch and to 1.09x in four sorted ones.
    """
    step: list = []
    for rows in micro_batches:
        step.append(rows)
        if len(step) == accumulation:
            yield _sorted_split(step)
            step = []
    if step:
        yield _sorted_split(step)


def _sorted_split(micro_batches: list[list]) -> list[list]:
    rows = sorted((row for batch in micro_batches for row in batch), key=lambda r: len(r[0]))
    size = math.ceil(len(rows) / len(micro_batches))
    return [rows[start : start + size] for start in range(0, len(rows), size)]


# --- the per-worker loop ---------------------------------------------------------------


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


def train_loop(cfg: dict[str, Any]) -> None:
    """What each Ray Train worker runs."""
    import ray.train

    entered = time.perf_counter()
    context = ray.train.get_context()
    worker = start_worker(
        cfg, context.get_world_rank(), context.get_world_size(), context.get_local_rank()
    )
    worker.state = _restore(worker.engine)
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
    summary = save_hf_checkpoint(worker, cfg)
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


def _train_epoch(cfg: dict[str, Any], worker: TrainWorker, shard: Any) -> None:
    """One pass over the worker's shard, skipping steps consumed before a restart."""
    state, total = worker.state, cfg["total_steps"]
    tokenize = Tokenize(worker.tokenizer, cfg["max_seq_len"])
    batches = _micro_batches(shard, cfg["micro_batch_size"], cfg["group_by_length"], tokenize)
    for micro_batches in _optimizer_steps(batches, cfg["gradient_accumulation_steps"]):
        worker.micro_seen += len(micro_batches)
        if worker.micro_seen <= state["micro_step"]:
            continue  # consumed before the restart
        if state["step"] >= total:
            break
        lr = learning_rate_at(
            state["step"], total, cfg["learning_rate"], cfg["warmup_steps"], cfg["lr_schedule"]
        )
        step_targets = sum(target_count(row[1]) for rows in micro_batches for row in rows)
        for index, rows in enumerate(micro_batches):
            ends_step = index == len(micro_batches) - 1
            train_micro_batch(
                worker, rows, lr, step_target_tokens=step_targets, ends_step=ends_step
            )
        if state["step"] < cfg["log_batch_ids_steps"]:
            ids = [str(row[3]) for rows in micro_batches for row in rows]
            _log_batch_ids(cfg, worker.rank, state["step"] + 1, ids)
        state["micro_step"] = worker.micro_seen
        state["step"] += 1
        _end_of_step(
            worker.engine, cfg, state, worker.window, lr, worker.rank, worker.world, worker.device
        )


def _log_batch_ids(cfg: dict[str, Any], rank: int, step: int, ids: list[str]) -> None:
    directory = Path(cfg["output_dir"]) / "batches"
    directory.mkdir(exist_ok=True)
    with open(directory / f"rank{rank}.jsonl", "a") as sink:
        sink.write(json.dumps({"step": step, "ids": ids}) + "\n")


def _end_of_step(engine, cfg, state, window, lr, rank, world, device) -> None:

    loss, target_tokens, tokens, truncated, rows = all_reduce(
        [window[k] for k in ("loss", "target_tokens", "tokens", "truncated", "rows")], device
    )
    elapsed = time.perf_counter() - window["started"]
    metrics = {
        "step": state["step"],
        "loss": loss / max(target_tokens, 1.0),
        "lr": lr,
        "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        "truncated": int(truncated),
        # Rows the step computed, all ranks together: its examples, or fewer when packed.
        "rows": int(rows),
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
    window.update(new_window())


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


def train(
    config: SelfEvoConfig,
    training_set: str | Path,
    model_path: str,
    output_dir: str | Path,
    *,
    tokenizer_path: str | None = None,
) -> TrainSummary:
    """Fine-tune ``model_path`` on a training-set Parquet file; returns where the model went.

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
    worker_config = loop_config(config, model_path, tokenizer_path, output_dir, steps)
    dataset = _training_dataset(training_set)
    started = time.perf_counter()
    (output_dir / FINAL_FILE).unlink(missing_ok=True)
    _torch_trainer(config, worker_config, dataset, output_dir).fit()
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


def _torch_trainer(
    config: SelfEvoConfig, worker_config: dict[str, Any], dataset: Any, output_dir: Path
) -> Any:
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchConfig, TorchTrainer

    from actors.placement import TRAINER_STRATEGY, trainer_worker_resources

    train_cfg = config.train
    return TorchTrainer(
        train_loop_per_worker=train_loop,
        train_loop_config=worker_config,
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
