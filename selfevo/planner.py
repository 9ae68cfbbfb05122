"""The scale planner: where a config's engines and trainer go, and whether they fit.

``selfevo plan CONFIG`` answers, before any GPU is reserved: how many GPUs the engine pool
and the trainer take, on which nodes, and how much memory each GPU needs. A plan that does
not fit is refused with the reason and what to change.

Placement follows the code. The engine pool reserves one placement-group bundle of
``tensor_parallel_size`` GPUs per engine (a bundle never spans nodes, so a vLLM engine's
tensor-parallel group sits inside one node); Ray Train gives each trainer worker one GPU.
Engines sleep while the trainer runs but keep their Ray reservation, so the two take
disjoint GPUs: ``num_engines * tp + num_workers <= num_nodes * gpus_per_node``.

Memory per GPU, in GiB (2**30 bytes):

* Engine: weights / tp, plus the KV cache for ``max_num_seqs`` sequences of ``max_seq_len``
  tokens (2 (K and V) x layers x KV heads x head dim x dtype bytes per token; KV heads split
  across the tp ranks, replicated when there are fewer heads than ranks), plus a fixed
  allowance for activations and CUDA graphs. Must stay under
  ``gpu_memory_utilization x gpu_memory_gb``. vLLM itself sizes its cache to what is left;
  the planner asks for the worst case so that every sequence can run at full length.
* Trainer (ZeRO-3, mixed-precision AdamW): 16 bytes per parameter (2 bf16 weights, 2 bf16
  gradients, 12 fp32 master weights and Adam moments) split across the data-parallel ranks.
  ``offload_optimizer`` moves the 12 bytes to host memory, ``offload_params`` the 2 weight
  bytes too. ZeRO-2 shards only gradients and optimizer states; ZeRO-0 shards nothing. Plus
  the gathered-parameter working set (DeepSpeed's ``stage3_max_live_parameters``, 1e9 by
  default), the activations (with gradient checkpointing: one saved hidden state per layer
  plus one layer being recomputed; without: every layer's), and the loss over the vocabulary
  (the logits and what cross entropy keeps of them). Must stay under
  ``TRAIN_HEADROOM x gpu_memory_gb``.

The activation figures are measured, not the textbook's. Korthikanti et al. (2022) give
34·s·b·h bytes a layer for a 16-bit GPT with flash attention, and the planner counted 4 bytes
per token and vocabulary entry for the loss. ``selfevo bench gpu`` on one H200 (a random Llama
of Llama 3.2 1B's layout, bf16, ZeRO-3 on one rank, 2,048-token sequences) measured the
trainer's allocated peak at two micro-batch sizes, with and without gradient checkpointing:
46.46 and 73.55 GiB for 4 and 8 sequences without, 33.70 and 48.02 with. Fitted to the model
above, that is 56.6 bytes a layer per token and hidden unit for a Hugging Face Llama (SwiGLU,
RMSNorm computed in fp32, SDPA attention) and 13.2 per token and vocabulary entry for the loss
(consistent with bf16 logits, their fp32 copy, the log-softmax and its gradient); the fixed
part (19.4 GiB) is under the planner's states and gathered parameters (20.3 GiB). With 57 and
14 the planner's figure is 3.6-5.1% above the four peaks. The MLP's share scales with its
width: Llama 3's 3.5x hidden (8B, 70B) keeps a little less than the measured model's 4x, so
the figure errs high there. Where the planner departs from reality: it ignores fragmentation
and NCCL buffers, which is what the headroom is for; but the allocator reserved 1.18-1.20x
its allocated peak with gradient checkpointing (1.09x without), more than the headroom and
the constants' excess cover (about 1.16x), so a plan near the limit can still run out;
``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` brought that to 1.11x (one run).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GIB = 2**30
ENGINE_OVERHEAD_GIB = 2.0  # activations of one forward pass and CUDA graphs, per engine GPU
TRAIN_HEADROOM = 0.9  # of a GPU's memory the trainer may plan to use
ZERO3_LIVE_PARAMETERS = 1e9  # DeepSpeed's stage3_max_live_parameters default
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 57  # per layer, HF Llama, measured (module docstring)
LOSS_BYTES_PER_TOKEN_VOCAB = 14  # logits and cross entropy's copies, measured likewise


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer the plan needs (Llama-style layout)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    head_dim: int = 0  # 0: hidden_size // num_heads
    tie_embeddings: bool = False

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def num_params(self) -> int:
        h, d = self.hidden_size, self.dim_per_head
        attention = h * self.num_heads * d * 2 + h * self.num_kv_heads * d * 2
        mlp = 3 * h * self.intermediate_size  # gate, up and down projections
        per_layer = attention + mlp + 2 * h  # plus two RMSNorm weights
        embeddings = self.vocab_size * h * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + embeddings + h

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> ModelShape:
        """From a ``config.json`` dict (or a transformers config's attributes, by these names)."""
        heads = config["num_attention_heads"]
        hidden = config["hidden_size"]
        return cls(
            hidden_size=hidden,
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            intermediate_size=config.get("intermediate_size") or 4 * hidden,
            vocab_size=config["vocab_size"],
            head_dim=config.get("head_dim") or 0,
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        )


HF_SHAPE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "head_dim",
    "tie_word_embeddings",
)


_LLAMA3_8B = ModelShape(4096, 32, 32, 8, 14336, 128256)
_LLAMA3_70B = ModelShape(8192, 80, 64, 8, 28672, 128256)
_LLAMA2_7B = ModelShape(4096, 32, 32, 32, 11008, 32000)
_LLAMA2_70B = ModelShape(8192, 80, 64, 8, 28672, 32000)
_QWEN25_7B = ModelShape(3584, 28, 28, 4, 18944, 152064)

# Hub names the planner knows without a download (their config.json values).
KNOWN_SHAPES: dict[str, ModelShape] = {
    "meta-llama/Llama-3.1-8B": _LLAMA3_8B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA3_8B,
    "meta-llama/Meta-Llama-3-8B-Instruct": _LLAMA3_8B,
    "meta-llama/Llama-3.1-70B": _LLAMA3_70B,
    "meta-llama/Llama-3.1-70B-Instruct": _LLAMA3_70B,
    "meta-llama/Llama-3.3-70B-Instruct": _LLAMA3_70B,
    "meta-llama/Llama-2-7b-hf": _LLAMA2_7B,
    "meta-llama/Llama-2-7b-chat-hf": _LLAMA2_7B,
    "meta-llama/Llama-2-70b-hf": _LLAMA2_70B,
    "Qwen/Qwen2.5-7B": _QWEN25_7B,
    "Qwen/Qwen2.5-7B-Instruct": _QWEN25_7B,
}


class PlanError(ValueError):
    """The model's shape cannot be found, or the config cannot be planned at all."""


def model_shape(name_or_path: str) -> ModelShape:
    """The shape from a local checkpoint's config.json, else from :data:`KNOWN_SHAPES`."""
    config_file = Path(name_or_path) / "config.json"
    if config_file.is_file():
        return ModelShape.from_hf_config(json.loads(config_file.read_text()))
    if name_or_path in KNOWN_SHAPES:
        return KNOWN_SHAPES[name_or_path]
    raise PlanError(
        f"model.name_or_path {name_or_path!r}: no config.json there and not a known hub name; "
        f"point it at a local checkpoint directory, or use one of: {', '.join(KNOWN_SHAPES)}"
    )


def _dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


@dataclass
class EnginePlan:
    num_engines: int
    tensor_parallel_size: int
    gpus: int
    weights_gib: float
    kv_cache_gib: float
    overhead_gib: float
    per_gpu_gib: float
    limit_gib: float


@dataclass
class TrainerPlan:
    num_workers: int
    zero_stage: int
    offload_optimizer: bool
    offload_params: bool
    gradient_checkpointing: bool
    states_gib: float  # weights, gradients and optimizer states held on each GPU
    live_params_gib: float
    activations_gib: float
    per_gpu_gib: float
    per_gpu_without_offload_gib: float
    host_gib_per_node: float
    limit_gib: float


@dataclass
class Plan:
    model: str
    num_params: int
    num_nodes: int
    gpus_per_node: int
    engines: EnginePlan
    trainer: TrainerPlan
    # node index -> what it holds, e.g. {"engines": 2, "engine_gpus": 8, "trainer_workers": 0}
    nodes: list[dict[str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fits": self.fits}


def engine_memory(shape: ModelShape, config: Any) -> EnginePlan:
    engine, tp = config.engine, config.engine.tensor_parallel_size
    dtype_bytes = _dtype_bytes(config.model.dtype.value)
    kv_heads_per_rank = max(1, math.ceil(shape.num_kv_heads / tp))
    kv_per_token = 2 * shape.num_layers * kv_heads_per_rank * shape.dim_per_head * dtype_bytes
    tokens = config.model.max_seq_len * engine.max_num_seqs
    weights = shape.num_params * dtype_bytes / tp / GIB
    kv_cache = kv_per_token * tokens / GIB
    per_gpu = weights + kv_cache + ENGINE_OVERHEAD_GIB
    return EnginePlan(
        num_engines=engine.num_engines,
        tensor_parallel_size=tp,
        gpus=engine.num_engines * tp,
        weights_gib=weights,
        kv_cache_gib=kv_cache,
        overhead_gib=ENGINE_OVERHEAD_GIB,
        per_gpu_gib=per_gpu,
        limit_gib=engine.gpu_memory_utilization * config.cluster.gpu_memory_gb,
    )


def zero_state_bytes_per_param(
    zero_stage: int, ranks: int, offload_optimizer: bool, offload_params: bool
) -> tuple[float, float]:
    """(GPU bytes, host bytes) per parameter per rank for mixed-precision AdamW under ZeRO."""
    weights, grads, optimizer = 2.0, 2.0, 12.0
    shard = {0: (1, 1, 1), 1: (1, 1, ranks), 2: (1, ranks, ranks), 3: (ranks, ranks, ranks)}
    w_div, g_div, o_div = shard[zero_stage]
    gpu, host = weights / w_div + grads / g_div, 0.0
    if offload_optimizer:
        host += optimizer / o_div
    else:
        gpu += optimizer / o_div
    if offload_params and zero_stage == 3:
        gpu -= weights / w_div
        host += weights / w_div
    return gpu, host


def trainer_memory(shape: ModelShape, config: Any) -> TrainerPlan:
    train = config.train
    ranks, stage = train.num_workers, train.zero_stage
    params = shape.num_params
    gpu_bytes, host_bytes = zero_state_bytes_per_param(
        stage, ranks, train.offload_optimizer, train.offload_params
    )
    bare_bytes, _ = zero_state_bytes_per_param(stage, ranks, False, False)
    live = min(ZERO3_LIVE_PARAMETERS, params) * 2 if stage == 3 else 0.0
    tokens = train.micro_batch_size * config.model.max_seq_len
    layer_acts = ACTIVATION_BYTES_PER_TOKEN_HIDDEN * tokens * shape.hidden_size
    if train.gradient_checkpointing:
        activations = shape.num_layers * 2 * tokens * shape.hidden_size + layer_acts
    else:
        activations = shape.num_layers * layer_acts
    activations += LOSS_BYTES_PER_TOKEN_VOCAB * tokens * shape.vocab_size
    extra = (live + activations) / GIB
    workers_per_node = min(ranks, config.cluster.gpus_per_node or ranks)
    return TrainerPlan(
        num_workers=ranks,
        zero_stage=stage,
        offload_optimizer=train.offload_optimizer,
        offload_params=train.offload_params,
        gradient_checkpointing=train.gradient_checkpointing,
        states_gib=params * gpu_bytes / GIB,
        live_params_gib=live / GIB,
        activations_gib=activations / GIB,
        per_gpu_gib=params * gpu_bytes / GIB + extra,
        per_gpu_without_offload_gib=params * bare_bytes / GIB + extra,
        host_gib_per_node=params * host_bytes * workers_per_node / GIB,
        limit_gib=TRAIN_HEADROOM * config.cluster.gpu_memory_gb,
    )


def _place(engines: EnginePlan, workers: int, num_nodes: int, per_node: int) -> list[dict]:
    """Engines packed first (whole TP bundles per node), trainer workers in the GPUs left."""
    nodes = [{"engines": 0, "engine_gpus": 0, "trainer_workers": 0} for _ in range(num_nodes)]
    free = [per_node] * num_nodes
    for _ in range(engines.num_engines):
        node = next((i for i in range(num_nodes) if free[i] >= engines.tensor_parallel_size), None)
        if node is None:
            raise PlanError("no node has room for another engine")
        nodes[node]["engines"] += 1
        nodes[node]["engine_gpus"] += engines.tensor_parallel_size
        free[node] -= engines.tensor_parallel_size
    for i in range(num_nodes):
        take = min(free[i], workers)
        nodes[i]["trainer_workers"] = take
        workers -= take
    if workers:
        raise PlanError(f"{workers} trainer worker(s) have no GPU left")
    return nodes


def _cpu_problems(config: Any, nodes: list[dict[str, int]]) -> list[str]:
    limit = config.cluster.cpus_per_node
    problems = []
    for index, node in enumerate(nodes):
        cpus = (
            node["engines"] * config.engine.cpus_per_engine
            + node["trainer_workers"] * config.train.cpus_per_worker
        )
        if limit and cpus > limit:
            problems.append(
                f"node {index} needs {cpus:g} CPUs (engine.cpus_per_engine, "
                f"train.cpus_per_worker) but cluster.cpus_per_node is {limit}"
            )
    return problems


def _placement_problems(config: Any, engines: EnginePlan) -> list[str]:
    cluster, tp = config.cluster, engines.tensor_parallel_size
    total = cluster.num_nodes * cluster.gpus_per_node
    wanted = engines.gpus + config.train.num_workers
    problems = []
    if tp > cluster.gpus_per_node:
        problems.append(
            f"engine.tensor_parallel_size={tp} is more than cluster.gpus_per_node="
            f"{cluster.gpus_per_node}: an engine's tensor-parallel group must sit in one node"
        )
    elif cluster.gpus_per_node % tp:
        problems.append(
            f"engine.tensor_parallel_size={tp} does not divide cluster.gpus_per_node="
            f"{cluster.gpus_per_node}: engines would strand GPUs; use a divisor"
        )
    if wanted > total:
        problems.append(
            f"{engines.num_engines} engine(s) x tp {tp} + {config.train.num_workers} trainer "
            f"worker(s) = {wanted} GPUs, but the cluster has {cluster.num_nodes} x "
            f"{cluster.gpus_per_node} = {total}; engines keep their GPUs while they sleep, so "
            "lower engine.num_engines or train.num_workers, or add nodes (cluster.num_nodes)"
        )
    return problems


def _memory_problems(engines: EnginePlan, trainer: TrainerPlan, config: Any) -> list[str]:
    problems = []
    if engines.per_gpu_gib > engines.limit_gib:
        problems.append(
            f"each engine GPU needs {engines.per_gpu_gib:.1f} GiB (weights "
            f"{engines.weights_gib:.1f} + KV cache {engines.kv_cache_gib:.1f} + overhead "
            f"{engines.overhead_gib:.1f}) but may use {engines.limit_gib:.1f} "
            f"(engine.gpu_memory_utilization x cluster.gpu_memory_gb); raise "
            "engine.tensor_parallel_size, or lower engine.max_num_seqs or model.max_seq_len"
        )
    if trainer.per_gpu_gib > trainer.limit_gib:
        advice = []
        if trainer.zero_stage != 3:
            advice.append("use train.zero_stage=3")
        if not trainer.gradient_checkpointing:
            advice.append("set train.gradient_checkpointing=true")
        if not trainer.offload_optimizer:
            advice.append("set train.offload_optimizer=true")
        advice.append(f"add trainer GPUs (train.num_workers, now {trainer.num_workers})")
        problems.append(
            f"each trainer GPU needs {trainer.per_gpu_gib:.1f} GiB (ZeRO-{trainer.zero_stage} "
            f"states {trainer.states_gib:.1f} + gathered parameters "
            f"{trainer.live_params_gib:.1f} + activations {trainer.activations_gib:.1f}) but "
            f"may use {trainer.limit_gib:.1f} ({TRAIN_HEADROOM:.0%} of "
            f"cluster.gpu_memory_gb); " + ", or ".join(advice)
        )
    if trainer.host_gib_per_node > config.cluster.node_memory_gb:
        problems.append(
            f"offloaded optimizer states need {trainer.host_gib_per_node:.0f} GiB of host "
            f"memory per node but cluster.node_memory_gb is {config.cluster.node_memory_gb:.0f}"
            "; add trainer GPUs or nodes"
        )
    return problems


def plan(config: Any, shape: ModelShape | None = None) -> Plan:
    """The placement and per-GPU memory of ``config`` (a validated SelfEvoConfig)."""
    cluster = config.cluster
    if cluster.gpus_per_node <= 0 or not config.train.use_gpu:
        raise PlanError(
            "the planner sizes GPU clusters: set cluster.gpus_per_node > 0 and "
            "train.use_gpu=true (the CPU demo needs no plan)"
        )
    shape = shape or model_shape(config.model.name_or_path)
    engines = engine_memory(shape, config)
    trainer = trainer_memory(shape, config)
    problems = _placement_problems(config, engines)
    nodes: list[dict[str, int]] = []
    if not problems:
        nodes = _place(engines, config.train.num_workers, cluster.num_nodes, cluster.gpus_per_node)
        problems += _cpu_problems(config, nodes)
    problems += _memory_problems(engines, trainer, config)
    return Plan(
        model=config.model.name_or_path,
        num_params=shape.num_params,
        num_nodes=cluster.num_nodes,
        gpus_per_node=cluster.gpus_per_node,
        engines=engines,
        trainer=trainer,
        nodes=nodes,
        problems=problems,
    )


def format_plan(result: Plan) -> str:
    """The plan as the lines ``selfevo plan`` prints."""
    e, t = result.engines, result.trainer
    offload = [
        n for n, on in (("optimizer", t.offload_optimizer), ("params", t.offload_params)) if on
    ]
    lines = [
        f"model {result.model}: {result.num_params / 1e9:.2f} B parameters",
        f"cluster: {result.num_nodes} node(s) x {result.gpus_per_node} GPUs",
        f"engines: {e.num_engines} x tp {e.tensor_parallel_size} = {e.gpus} GPUs; per GPU "
        f"{e.per_gpu_gib:.1f} GiB (weights {e.weights_gib:.1f} + KV cache "
        f"{e.kv_cache_gib:.1f} + overhead {e.overhead_gib:.1f}) of {e.limit_gib:.1f}",
        f"trainer: {t.num_workers} workers, ZeRO-{t.zero_stage}, offload "
        f"{'+'.join(offload) or 'none'}, checkpointing "
        f"{'on' if t.gradient_checkpointing else 'off'}"
        f"; per GPU {t.per_gpu_gib:.1f} GiB (states {t.states_gib:.1f} + gathered params "
        f"{t.live_params_gib:.1f} + activations {t.activations_gib:.1f}) of {t.limit_gib:.1f}"
        f"; without offload {t.per_gpu_without_offload_gib:.1f}; host per node "
        f"{t.host_gib_per_node:.0f} GiB",
    ]
    for index, node in enumerate(result.nodes):
        lines.append(
            f"  node {index}: {node['engines']} engine(s) on {node['engine_gpus']} GPUs, "
            f"{node['trainer_workers']} trainer worker(s)"
        )
    if result.fits:
        lines.append("fits")
    else:
        lines += ["does not fit:", *(f"  - {problem}" for problem in result.problems)]
    return "\n".join(lines)


def format_simulation(report: dict[str, Any]) -> str:
    """The lines ``selfevo plan --simulate`` prints: where Ray put each engine and worker."""
    lines = ["simulated placement (Ray's scheduler, stand-in actors):"]
    for index, engine in enumerate(report["engines"]):
        lines.append(f"  engine {index}: node {engine['node']}, GPUs {engine['gpu_ids']}")
    by_node: dict[int, int] = {}
    for worker in report["trainer_workers"]:
        by_node[worker["node"]] = by_node.get(worker["node"], 0) + 1
    spread = ", ".join(f"node {node}: {count}" for node, count in sorted(by_node.items()))
    lines.append(f"  trainer workers per node: {spread}")
    lines.append(f"  GPUs reserved per node: {report['gpus_reserved_per_node']}")
    return "\n".join(lines)
