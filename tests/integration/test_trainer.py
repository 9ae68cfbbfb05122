"""Ray Train + DeepSpeed ZeRO on CPU (gloo): learning, sharding, checkpoints, LoRA, restarts.

The data: 3-digit additions whose prompts and sums all have the same length, so a step's loss
does not depend on how its rows are split across workers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")

from actors.models import build_tiny_llama, load_model, load_tokenizer  # noqa: E402
from actors.train_step import (  # noqa: E402
    IGNORE,
    PROBE_TEXT,
    Tokenize,
    masked_loss_sum,
    new_window,
    tokenize_example,
)
from actors.trainer import (  # noqa: E402
    _examples_table,
    _micro_batches,
    _optimizer_steps,
    train,
    write_examples,
)
from selfevo.config import load_config  # noqa: E402
from selfevo.records import Message  # noqa: E402
from selfevo.training import TrainExample  # noqa: E402

pytestmark = pytest.mark.integration
EXAMPLES = 256
# ln(vocab) ~ 4.64 at the start; two epochs at lr 1e-2 reach ~2.1 (measured), so 2.6 is a
# bound a broken optimizer step or loss mask would miss.
LOSS_BOUND = 2.6


def _additions(count: int, seed: int = 0) -> list[TrainExample]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        a, b = rng.randint(500, 999), rng.randint(500, 999)
        out.append(TrainExample(f"ex{i}", (Message("user", f"{a}+{b}="),), str(a + b)))
    return out


def _config(*overrides: str):
    base = [
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
        "train.micro_batch_size=8",
        "train.gradient_accumulation_steps=1",
        "train.learning_rate=0.01",
        "train.epochs=2",
        "model.max_seq_len=64",
        "run.seed=0",
    ]
    return load_config("demo", [*base, *overrides])


def _losses(output_dir) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    model = build_tiny_llama(root / "base")
    data = write_examples(_additions(EXAMPLES), root / "train.parquet")
    return root, str(model), data


@pytest.fixture(scope="module")
def zero_runs(ray_cluster, workspace):
    root, model, data = workspace
    return {
        # ZeRO-3 packs its micro-batches: the bench step below, replaying its first batches
        # padded, gets the same losses only if packing trains what padding does.
        stage: train(
            _config(
                f"train.zero_stage={stage}",
                "train.log_batch_ids_steps=3",
                f"train.packing={stage == 3}",
                # Room for two of the 42-token examples in a packed row, not three.
                *(["model.max_seq_len=100"] if stage == 3 else []),
            ),
            data,
            model,
            root / f"zero{stage}",
        )
        for stage in (2, 3)
    }


@pytest.mark.parametrize("stage", [2, 3])
def test_two_workers_learn_and_the_checkpoint_matches_memory(stage, zero_runs, workspace):
    root = workspace[0]
    summary = zero_runs[stage]
    metrics = _losses(root / f"zero{stage}")
    assert summary.steps == len(metrics) == 32 and metrics[-1]["world_size"] == 2
    assert metrics[0]["loss"] > 4.0 and summary.final_loss < LOSS_BOUND
    assert all(m["tokens_per_s"] > 0 and m["lr"] > 0 for m in metrics)
    # 8 examples a worker a step: one padded row each, or two to a row when packed (ZeRO-3).
    assert {m["rows"] for m in metrics} == {8 if stage == 3 else 16}
    hf = root / f"zero{stage}" / "hf"
    assert (hf / "model.safetensors").is_file() and not list(hf.glob("*.bin"))
    # One copy of the model: Ray Train's storage folder holds no second one.
    assert not list((root / f"zero{stage}" / "ray_train").rglob("*.safetensors"))
    # The in-memory logits were written by the trained model itself; reload and compare here.
    from safetensors.torch import load_file

    in_memory = load_file(str(root / f"zero{stage}" / "probe_logits.safetensors"))["logits"]
    tokenizer = load_tokenizer(str(hf))
    ids = torch.tensor([tokenizer(PROBE_TEXT)["input_ids"]])
    with torch.no_grad():
        reloaded = load_model(str(hf))(input_ids=ids).logits
    assert torch.allclose(reloaded, in_memory, atol=1e-5)
    assert summary.reload_max_abs_logit_diff <= 1e-5


def test_asking_again_for_a_finished_run_does_nothing(zero_runs, workspace):
    root, model, data = workspace
    started = time.perf_counter()
    again = train(_config("train.zero_stage=2"), data, model, root / "zero2")
    assert again.skipped and again.steps == zero_runs[2].steps
    assert time.perf_counter() - started < 2


def test_one_and_two_workers_agree_on_the_first_steps(zero_runs, workspace, ray_cluster):
    """Replays the 2-worker run's global batches on one worker: same losses, step by step."""
    root, model, _ = workspace
    steps = _logged_global_batches(root / "zero2", 3)
    seen = [i for step in steps for i in step]
    assert len(seen) == len(set(seen)) == 48, "each example once across ranks and steps"
    by_id = {e.id: e for e in _additions(EXAMPLES)}
    order = seen + [i for i in by_id if i not in set(seen)]
    data = write_examples([by_id[i] for i in order], root / "replay.parquet")
    single = train(
        _config("train.zero_stage=2", "train.num_workers=1", "train.micro_batch_size=16"),
        data,
        model,
        root / "single",
    )
    one = [m["loss"] for m in _losses(root / "single")[:3]]
    two = [m["loss"] for m in _losses(root / "zero2")[:3]]
    assert single.steps == 32
    assert one == pytest.approx(two, rel=1e-4)


def _logged_global_batches(run_dir: Path, steps: int) -> list[list[str]]:
    """The example ids of each of a 2-worker run's first optimizer steps, both ranks'."""
    batches = {
        rank: [
            json.loads(line)
            for line in (run_dir / "batches" / f"rank{rank}.jsonl").read_text().splitlines()
        ]
        for rank in (0, 1)
    }
    return [batches[0][i]["ids"] + batches[1][i]["ids"] for i in range(steps)]


@pytest.fixture
def single_process_group(monkeypatch):
    """DeepSpeed in this process, leaving nothing behind for later tests."""
    import torch.distributed as dist

    from actors.train_step import init_single_process_group

    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    threads = torch.get_num_threads()
    init_single_process_group(use_gpu=False)
    yield
    dist.destroy_process_group()
    # DeepSpeed keeps a clone of the world group, which the next process group replaces.
    import deepspeed.utils.groups

    deepspeed.utils.groups._WORLD_GROUP = None
    torch.set_num_threads(threads)


def test_the_bench_step_without_ray_gives_ray_trains_losses(
    zero_runs, workspace, single_process_group
):
    """``selfevo bench gpu`` runs the trainer's set-up and step in one process, no Ray Train:
    replaying the 2-worker ZeRO-3 run's first global batches there gives the same losses."""
    from actors.train_step import loop_config, start_worker, train_micro_batch
    from actors.trainer import total_steps
    from selfevo.training import learning_rate_at

    root, model, _ = workspace
    config = _config("train.zero_stage=3", "train.num_workers=1", "train.micro_batch_size=16")
    steps = total_steps(config.train, EXAMPLES)
    cfg = loop_config(config, model, model, root / "no_ray", steps)
    worker = start_worker(cfg, rank=0, world=1, local_rank=0)
    tokenize = Tokenize(worker.tokenizer, cfg["max_seq_len"])
    by_id = {e.id: e for e in _additions(EXAMPLES)}
    losses = []
    for step, ids in enumerate(_logged_global_batches(root / "zero3", 3)):
        rows = tokenize(_examples_table([by_id[i] for i in ids]))
        worker.window = new_window()
        lr = learning_rate_at(
            step, steps, cfg["learning_rate"], cfg["warmup_steps"], cfg["lr_schedule"]
        )
        train_micro_batch(worker, rows, lr)
        losses.append(worker.window["loss"] / worker.window["target_tokens"])
    assert steps == zero_runs[3].steps
    assert losses == pytest.approx([m["loss"] for m in _losses(root / "zero3")[:3]], rel=1e-4)


def _varied_rows(tokenizer, count: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Examples whose prompts and targets both vary in length (1 to 4 terms, 1 to 12 digits)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        prompt = "+".join(str(rng.randint(10, 999)) for _ in range(rng.randint(1, 4))) + "="
        target = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12)))
        out = tokenize_example(tokenizer, [Message("user", prompt)], target, 128)
        rows.append((out["input_ids"], out["labels"]))
    return rows


def test_a_step_split_into_sorted_micro_batches_trains_as_one_micro_batch(
    workspace, single_process_group
):
    """Gradient accumulation sorts a step's rows by length before splitting them into
    micro-batches: they pad less, and the step is the same as one micro-batch of all its rows
    (each micro-batch's loss is divided by the step's target tokens). Three AdamW steps: after
    the first, the update depends on how the steps' gradients compare, so a micro-batch
    weighted wrongly (say by its own tokens) would show in the weights."""
    from actors.train_step import (
        collate,
        loop_config,
        start_worker,
        target_count,
        train_micro_batch,
    )

    root, model, _ = workspace
    one = _config("train.num_workers=1", "train.micro_batch_size=12")
    split = _config(
        "train.num_workers=1", "train.micro_batch_size=4", "train.gradient_accumulation_steps=3"
    )
    whole = start_worker(loop_config(one, model, model, root / "one", 3), 0, 1, 0)
    accumulated = start_worker(loop_config(split, model, model, root / "split", 3), 0, 1, 0)
    padded = {"in order": 0, "sorted": 0}
    for step in range(3):
        rows = _varied_rows(whole.tokenizer, 12, seed=step)
        in_order = [rows[i : i + 4] for i in range(0, 12, 4)]
        [micro_batches] = list(_optimizer_steps(in_order, 3))
        assert sorted(map(str, rows)) == sorted(str(r) for b in micro_batches for r in b)
        for name, batches in (("in order", in_order), ("sorted", micro_batches)):
            padded[name] += sum(collate(b, 0, "cpu")["input_ids"].numel() for b in batches)
        train_micro_batch(whole, rows, 0.01)
        targets = sum(target_count(labels) for _, labels in rows)
        for index, batch in enumerate(micro_batches):
            train_micro_batch(
                accumulated, batch, 0.01, step_target_tokens=targets, ends_step=index == 2
            )
        assert accumulated.engine.global_steps == whole.engine.global_steps == step + 1
    assert padded["sorted"] < padded["in order"]
    start = load_model(model).state_dict()
    moved = 0.0
    for name, weight in whole.engine.module.state_dict().items():
        other = accumulated.engine.module.state_dict()[name]
        # fp32 rounding, which AdamW enlarges where a gradient is near 0: at most 3e-5 here;
        # a micro-batch weighted by its own tokens moves weights by 0.02-0.05.
        assert torch.allclose(weight, other, atol=1e-4, rtol=0), name
        moved = max(moved, float((weight - start[name]).abs().max()))
    assert moved > 0.02  # three steps at lr 0.01


def test_an_epochs_last_step_may_hold_fewer_micro_batches():
    rows = [([1] * n, [IGNORE] * n) for n in (5, 1, 3, 2, 4)]
    steps = list(_optimizer_steps([rows[:2], rows[2:4], rows[4:]], 2))
    assert [[len(row[0]) for row in batch] for step in steps for batch in step] == [
        [1, 2],
        [3, 5],
        [4],
    ]
    assert [len(step) for step in steps] == [2, 1]


def _mixed_lengths(tokenizer, count: int = 12) -> list[tuple[list[int], list[int]]]:
    """Examples of different lengths (sums of 1 to 12 numbers: 40 to 90 tokens), tokenised
    as training does."""
    rng = random.Random(1)
    rows = []
    for i in range(count):
        terms = [rng.randint(10, 999) for _ in range(1 + i % 12)]
        prompt = "+".join(map(str, terms)) + "="
        out = tokenize_example(tokenizer, [Message("user", prompt)], str(sum(terms)), 128)
        rows.append((out["input_ids"], out["labels"]))
    return rows


def test_packed_rows_give_the_padded_rows_loss_and_gradients(workspace):
    """Packing changes how examples are laid out, not what is learned: fewer rows, the same
    loss and the same gradients as one padded row per example."""
    from actors.train_step import collate, collate_packed

    tokenizer = load_tokenizer(workspace[1])
    model = load_model(workspace[1])
    examples = _mixed_lengths(tokenizer)

    def loss_and_grads(batch, **inputs):
        model.zero_grad()
        loss, count = masked_loss_sum(
            model(input_ids=batch["input_ids"], **inputs).logits, batch["labels"]
        )
        loss.backward()
        return float(loss.detach()), int(count), [p.grad.clone() for p in model.parameters()]

    padded = collate(examples, tokenizer.pad_token_id, "cpu")
    packed = collate_packed(examples, tokenizer.pad_token_id, "cpu", 128)
    assert packed["input_ids"].shape[0] < len(examples) == padded["input_ids"].shape[0]
    assert packed["tokens"] == int(padded["attention_mask"].sum())
    loss, count, grads = loss_and_grads(padded, attention_mask=padded["attention_mask"])
    packed_loss, packed_count, packed_grads = loss_and_grads(
        packed, position_ids=packed["position_ids"], use_cache=False
    )
    assert packed_count == count
    assert packed_loss == pytest.approx(loss, rel=1e-5)
    for grad, packed_grad in zip(grads, packed_grads, strict=True):
        assert torch.allclose(packed_grad, grad, atol=1e-6, rtol=1e-4)


def test_pack_rows_keeps_each_example_whole_within_the_width():
    from actors.train_step import pack_rows

    lengths = [60, 10, 33, 31, 64, 5, 5, 20]
    rows = pack_rows(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert len(rows) == 4  # 64 | 60+ | 33+31 | 20+10+5+5 (+ the 60's room of 4 stays empty)


class _IgnoresPackedPositions(torch.nn.Module):
    """A model that masks causally over the whole row, whatever the position ids say (as
    flash-attention-2 does with more than one packed row): examples see their row-mates."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, **kwargs):
        kwargs.setdefault("attention_mask", torch.ones_like(input_ids))
        return self.model(input_ids=input_ids, **kwargs)


def test_packing_check_refuses_a_model_whose_examples_see_each_other():
    """Before the first packed step each example's loss in the packed rows is compared with
    its loss in padded rows: a model that lets an example attend to the ones before it in
    its row stops the run with a clear error instead of training on that; the check leaves
    the model's training mode as it found it."""
    from types import SimpleNamespace

    from actors.train_step import _check_packing, collate_packed
    from selfevo.division_world import SEED_CHECKPOINT

    # A trained model (the division world's seed): an untrained one barely reads its context.
    tokenizer = load_tokenizer(str(SEED_CHECKPOINT))
    model = load_model(str(SEED_CHECKPOINT)).train()
    examples = _mixed_lengths(tokenizer)
    packed = collate_packed(examples, tokenizer.pad_token_id, "cpu", 128)
    assert packed["input_ids"].shape[0] < len(examples)

    def worker(module):
        return SimpleNamespace(
            engine=SimpleNamespace(module=module),
            tokenizer=tokenizer,
            device="cpu",
            packing_checked=False,
        )

    honest = worker(model)
    _check_packing(honest, examples, packed)
    assert honest.packing_checked and model.training
    leaky = worker(_IgnoresPackedPositions(model))
    with pytest.raises(ValueError, match=r"train\.packing=false"):
        _check_packing(leaky, examples, packed)
    assert not leaky.packing_checked
    # Nothing packed (one example a row): nothing checked yet, so the next micro-batch is.
    longest = max(len(ids) for ids, _ in examples[:2])
    alone = collate_packed(examples[:2], tokenizer.pad_token_id, "cpu", longest)
    assert alone["input_ids"].shape[0] == 2
    unpacked = worker(_IgnoresPackedPositions(model))
    _check_packing(unpacked, examples[:2], alone)
    assert not unpacked.packing_checked


def test_loss_covers_target_tokens_only(workspace):
    """With the logits fixed, the prompt's tokens do not enter the loss; the target's do."""
    tokenizer = load_tokenizer(workspace[1])
    first = tokenize_example(tokenizer, [Message("user", "123+456=")], "579", 64)
    other_prompt = tokenize_example(tokenizer, [Message("user", "987+654=")], "579", 64)
    other_target = tokenize_example(tokenizer, [Message("user", "123+456=")], "578", 64)
    from actors.models import encode_prompt
    from selfevo.templates import render_prompt

    n_prompt = len(
        encode_prompt(tokenizer, render_prompt([Message("user", "123+456=")], tokenizer))
    )
    assert first["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert first["labels"][n_prompt:] == first["input_ids"][n_prompt:]
    torch.manual_seed(0)
    logits = torch.randn(1, len(first["input_ids"]), len(tokenizer))
    loss = lambda row: masked_loss_sum(logits, torch.tensor([row["labels"]]))  # noqa: E731
    base_loss, base_count = loss(first)
    assert base_count == len("579") + 1  # three digits and the EOS
    assert torch.equal(loss(other_prompt)[0], base_loss)
    assert not torch.equal(loss(other_target)[0], base_loss)


class _Shard:
    """Stands in for a Ray Data shard (``iter_batches`` in Arrow): training-set rows whose
    targets alternate between a short and a long one."""

    def __init__(self, count: int):
        self.table = _examples_table(
            [
                TrainExample(f"id{i}", (Message("user", "1+1="),), "2" if i % 2 else "2" * 7)
                for i in range(count)
            ]
        )

    def iter_batches(self, batch_size, batch_format):
        assert batch_format == "pyarrow"
        for start in range(0, self.table.num_rows, batch_size):
            yield self.table.slice(start, batch_size)


def test_micro_batches_keep_the_shuffled_order_unless_grouped_by_length(workspace):
    """A mixed corpus stays mixed within each micro-batch by default; grouping by length puts
    the short rows together (the throughput option, and why it is off by default)."""
    tokenize = Tokenize(load_tokenizer(workspace[1]), 64)
    plain = list(_micro_batches(_Shard(64), 4, False, tokenize))
    assert [row[3] for batch in plain for row in batch] == [f"id{i}" for i in range(64)]
    assert all(len({len(row[0]) for row in batch}) == 2 for batch in plain)
    grouped = list(_micro_batches(_Shard(64), 4, True, tokenize))
    assert sorted(row[3] for batch in grouped for row in batch) == sorted(
        f"id{i}" for i in range(64)
    )
    assert all(len({len(row[0]) for row in batch}) == 1 for batch in grouped)


def test_truncation_is_counted(workspace):
    tokenizer = load_tokenizer(workspace[1])
    row = tokenize_example(tokenizer, [Message("user", "1+1=")], "2" * 50, 32)
    assert row["truncated"] and len(row["input_ids"]) == len(row["labels"]) == 32


def test_lora_adapter_trains_and_merges(ray_cluster, workspace):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    root, model, data = workspace
    train(
        _config(
            "train.num_workers=1",
            "train.zero_stage=2",
            "train.lora.enabled=true",
            "train.lora.r=4",
            "train.lora.target_modules=[q_proj,v_proj]",
            "train.epochs=1",
        ),
        data,
        model,
        root / "lora",
    )
    adapter = root / "lora" / "hf" / "adapter"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items()), "B starts at 0"
    ids = torch.tensor([load_tokenizer(model)(PROBE_TEXT)["input_ids"]])
    with torch.no_grad():
        base_and_adapter = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model), adapter
        )(input_ids=ids).logits
        merged = load_model(str(root / "lora" / "hf"))(input_ids=ids).logits
        base = load_model(model)(input_ids=ids).logits
    assert torch.allclose(merged, base_and_adapter, atol=1e-5)
    assert not torch.allclose(merged, base, atol=1e-3)


def _train_worker_pids(raylet_pid: int) -> list[int]:
    """This cluster's live Ray Train worker processes (Ray titles them ``ray::RayTrainWorker``
    and starts them from the raylet; another cluster on the machine has its own raylet)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == raylet_pid and (proc / "cmdline").read_bytes().startswith(
                b"ray::RayTrainWorker"
            ):
                pids.append(int(proc.name))
        except (OSError, ValueError, IndexError):  # the process ended while we looked
            continue
    return pids


def _raylet_pid(ray) -> int:
    """The pid of this cluster's raylet: every worker process's parent. (A lambda: Ray ships
    it by value, where a test module's function would need the module on the worker.)"""
    return ray.get(ray.remote(num_cpus=0)(lambda: os.getppid()).remote())


def test_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, workspace):
    root, model, data = workspace
    out = root / "killed"
    killed = {}
    raylet = _raylet_pid(ray_cluster)

    def checkpoint_registered() -> bool:
        snapshot = out / "ray_train" / "checkpoint_manager_snapshot.json"
        return snapshot.exists() and bool(json.loads(snapshot.read_text())["checkpoint_results"])

    def kill_a_worker_after_step_6():
        deadline = time.time() + 300
        while time.time() < deadline:
            metrics = out / "metrics.jsonl"
            steps_done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            if steps_done >= 6 and checkpoint_registered():
                pid = max(_train_worker_pids(raylet))
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_worker_after_step_6)
    killer.start()
    summary = train(
        _config(
            # ZeRO-1, the demos' stage (stage 2's training and saving are checked above; its
            # resume is the same DeepSpeed save and load). 8 rows a worker a step, as two
            # sorted micro-batches: the resume skips whole steps' micro-batches.
            "train.zero_stage=1",
            "train.micro_batch_size=4",
            "train.gradient_accumulation_steps=2",
            "train.checkpoint_every_steps=4",
            "train.max_failures=2",
            "train.epochs=3",
        ),
        data,
        model,
        out,
    )
    killer.join()
    assert killed, "the worker was never killed"
    steps = [m["step"] for m in _losses(out)]
    assert summary.steps == 48 and steps[-1] == 48
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    resumed_from = steps[restart] - 1
    assert resumed_from > 0 and resumed_from % 4 == 0, f"resumed after step {resumed_from}"
    assert not list((out / "ray_train").glob("resume_step*")), "resume checkpoints left behind"


def test_zero3_with_offload_and_gradient_checkpointing(ray_cluster, workspace):
    root, model, data = workspace
    summary = train(
        _config(
            "train.zero_stage=3",
            "train.offload_params=true",
            "train.offload_optimizer=true",
            "train.gradient_checkpointing=true",
            "train.max_steps=3",
        ),
        data,
        model,
        root / "offload",
    )
    losses = [m["loss"] for m in _losses(root / "offload")]
    assert summary.steps == 3 and all(0 < loss < 10 for loss in losses)
    assert summary.reload_max_abs_logit_diff <= 1e-5
