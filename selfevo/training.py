"""Pure training logic: what to train on, the DeepSpeed config, the schedule, and MFU.

Training examples are (prompt messages, target text) pairs. They come from kept round records
(the final response is the target), from meta-skill records, or from a plain SFT file
``{"prompt" | "messages", "response"}``. The mode picks the data and the starting weights:

- ``restart``: from the meta-skill (or base) model, on D_meta + every round's data so far
  (SELF's default);
- ``continual``: from the previous round's model, on this round's data;
- ``latest``: from the base model, on this round's data only (I-SHEEP's default).

In every mode ``train.meta_mix_ratio`` x |D_meta| meta-skill examples are mixed back in, so
the model keeps its ability to critique and refine. Nothing here imports torch or DeepSpeed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from selfevo.records import CORRECT, INCORRECT, KEPT, REJECTED, Message, Record, Reject
from selfevo.stages import feedback_prompt, refine_prompt
from selfevo.templates import answer_messages

if TYPE_CHECKING:
    from selfevo.config import SelfEvoConfig


@dataclass(frozen=True)
class TrainExample:
    id: str
    messages: tuple[Message, ...]
    target: str
    source: str = "round"


def examples_from_records(records: Iterable[Record], source: str = "round") -> list[TrainExample]:
    """Kept records become (answer prompt, final response) examples; others are skipped."""
    return [
        TrainExample(r.id, tuple(answer_messages(r)), r.final_response or "", source)
        for r in records
        if r.status == KEPT and r.final_response
    ]


def meta_examples(
    records: Iterable[Record], template_set: str = "default", false_alarms: bool = False
) -> list[TrainExample]:
    """SELF's meta-skill corpus D_meta from labeled records.

    Each labeled record gives a feedback example (critique prompt -> the labeler's feedback,
    verdict line included) and, when judged incorrect, a refinement example (refine prompt ->
    the labeler's refinement). Records the labeler could not label are skipped.

    With ``false_alarms`` (a departure from the paper), a record judged correct whose task
    writes false alarms (``Task.false_alarm``) also gives a refinement example on its check
    with a slip (judging it incorrect) whose target is the reference solution, the same
    answer (``meta_refine_kept``): a refiner that only ever saw real flags changes every answer it
    is handed, and a critic's checks slip.
    """
    from selfevo.oracle import gold_solution
    from selfevo.tasks import task_named

    out = []
    for r in records:
        failed = r.status == REJECTED and not (r.reject_reason or "").startswith(
            Reject.JUDGED_INCORRECT
        )
        if failed or r.response is None or r.feedback is None or r.judgement is None:
            continue
        out.append(
            TrainExample(
                f"{r.id}:feedback",
                tuple(feedback_prompt(r, r.response, template_set)),
                r.feedback,
                "meta_feedback",
            )
        )
        if r.judgement == INCORRECT and r.refined_response:
            out.append(
                TrainExample(
                    f"{r.id}:refine",
                    tuple(refine_prompt(r, r.response, r.feedback, template_set)),
                    r.refined_response,
                    "meta_refine",
                )
            )
        if not (false_alarms and r.judgement == CORRECT):
            continue
        slipped = task_named(r.task).false_alarm(r, r.response)
        if slipped and (target := gold_solution(r)):
            out.append(
                TrainExample(
                    f"{r.id}:refine_kept",
                    tuple(refine_prompt(r, r.response, slipped, template_set)),
                    target,
                    "meta_refine_kept",
                )
            )
    return out


def qa_examples(records: Iterable[Record], template_set: str = "default") -> list[TrainExample]:
    """Plain question -> reference solution pairs (SELF trains on these beside D_meta).

    The reference is the data's own solution (``meta["solution"]``, as GSM8K and the demo
    world have), else ``The answer is <gold>.``; records without a gold answer are skipped.
    """
    from selfevo.oracle import gold_solution

    out = []
    for r in records:
        target = gold_solution(r)
        if target:
            out.append(
                TrainExample(
                    f"{r.prompt_id}:qa", tuple(answer_messages(r, template_set)), target, "qa"
                )
            )
    return out


def own_answer_replay(labeled: Iterable[Record], template_set: str = "default"):
    """The model's own answers that the oracle judged correct, as answer examples.

    A warm-up that teaches only new forms makes a tiny model forget how to answer; replaying
    its own right answers keeps that skill without handing it any gold solution.
    """
    return [
        TrainExample(
            f"{r.id}:own", tuple(answer_messages(r, template_set)), r.response, "warmup_own"
        )
        for r in labeled
        if r.judgement == CORRECT and r.response
    ]


def examples_from_rows(rows: Iterable[dict[str, Any]], source: str = "sft") -> list[TrainExample]:
    """Rows ``{"id"?, "prompt" | "messages", "response"}`` (or a records row) as examples.

    Raises:
        ValueError: naming the row index and the field, for a row that is not an example.
    """
    examples = []
    for index, row in enumerate(rows):
        if "status" in row and "prompt_id" in row:  # a pipeline record
            examples += examples_from_records([Record.from_row(row)], source)
            continue
        target = row.get("response", row.get("target"))
        if not isinstance(target, str) or not target:
            raise ValueError(f"row {index}: field 'response' must be a non-empty string")
        if isinstance(row.get("messages"), list):
            messages = tuple(Message(m["role"], m["content"]) for m in row["messages"])
        elif isinstance(row.get("prompt"), str) and row["prompt"]:
            messages = (Message("user", row["prompt"]),)
        else:
            raise ValueError(f"row {index}: needs a non-empty 'prompt' or a 'messages' list")
        examples.append(TrainExample(str(row.get("id", index)), messages, target, source))
    return examples


def shuffled(examples: Iterable[TrainExample], seed: int = 0) -> list[TrainExample]:
    """``examples`` in a random order that depends only on their ids and ``seed``.

    Training sets are built source by source (all critiques, then all QA pairs) and the
    trainer streams them in file order, so an unshuffled set trains one skill after another
    and the last block wins. The sort by id first makes the order independent of the order
    rows arrived in (the pipeline writes them as they finish).
    """
    out = sorted(examples, key=lambda e: e.id)
    random.Random(seed).shuffle(out)
    return out


def mix_training_set(
    mode: str,
    meta: list[TrainExample],
    rounds: list[list[TrainExample]],
    meta_mix_ratio: float,
    seed: int = 0,
) -> list[TrainExample]:
    """The training set for the newest round, :func:`shuffled` with ``seed``.

    Args:
        mode: ``restart`` (all rounds), ``continual`` or ``latest`` (the newest round only).
        meta: the meta-skill corpus D_meta.
        rounds: each round's kept examples, oldest first.
        meta_mix_ratio: how many meta examples to mix in, as a fraction of |D_meta|
            (1.0 = all of it; above 1 repeats it).
    """
    if mode not in ("restart", "continual", "latest"):
        raise ValueError(f"unknown training mode {mode!r}; expected restart, continual or latest")
    own = [e for data in rounds for e in data] if mode == "restart" else []
    if mode != "restart" and rounds:
        own = list(rounds[-1])
    meta = sorted(meta, key=lambda e: e.id)
    wanted = round(len(meta) * meta_mix_ratio)
    mixed_meta = [meta[i % len(meta)] for i in range(wanted)] if meta else []
    if wanted < len(meta):
        mixed_meta = random.Random(seed).sample(meta, wanted)
    return shuffled(own + mixed_meta, seed)


def starting_model(mode: str, base: str, meta_model: str | None, previous: str | None) -> str:
    """The weights a round's fine-tuning starts from.

    ``restart`` starts from the meta-skill model (the base model when there is none);
    ``continual`` from the previous round's model (the meta/base model in the first round);
    ``latest`` from the base model.
    """
    if mode == "restart":
        return meta_model or base
    if mode == "continual":
        return previous or meta_model or base
    if mode == "latest":
        return base
    raise ValueError(f"unknown training mode {mode!r}; expected restart, continual or latest")


def learning_rate_at(
    step: int, total_steps: int, base_lr: float, warmup_steps: int, schedule: str
) -> float:
    """Linear warmup to ``base_lr``, then cosine or linear decay to 0, or constant."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return base_lr * (1.0 - progress)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def deepspeed_config(train: Any, world_size: int, bf16: bool) -> dict[str, Any]:
    """The DeepSpeed config for a ``TrainConfig`` (schedule and optimizer stay ours)."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage >= 2:
        zero.update(overlap_comm=False, contiguous_gradients=True)
    if train.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    config_extra = {"zero_force_ds_cpu_optimizer": False} if train.offload_optimizer else {}
    if train.offload_params and train.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "train_batch_size": train.micro_batch_size * train.gradient_accumulation_steps * world_size,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        # Our AdamW stays in charge under offload too (DeepSpeed would want its CPUAdam op).
        **config_extra,
    }


def train_flops_per_token(num_params: int, num_layers: int, hidden: int, seq_len: int) -> float:
    """Forward + backward FLOPs per token: 6N plus attention's 12 * layers * hidden * seq."""
    return 6.0 * num_params + 12.0 * num_layers * hidden * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the hardware's peak."""
    return tokens_per_s * flops_per_token / peak_flops if peak_flops > 0 else 0.0


def round_training(config: SelfEvoConfig) -> SelfEvoConfig:
    """The config a self-evolution round fine-tunes with: ``train.round_learning_rate`` and
    ``train.round_epochs`` in place of ``learning_rate`` and ``epochs``, where they are set."""
    train = config.train
    return replace(
        config,
        train=replace(
            train,
            learning_rate=train.round_learning_rate or train.learning_rate,
            epochs=train.round_epochs or train.epochs,
        ),
    )
