"""Typed configuration for every selfevo command.

The schema is a tree of dataclasses turned into an OmegaConf structured config, so a YAML file
or a ``key=value`` override with an unknown key or a value of the wrong type fails at load
time instead of deep inside a Ray job. Choices are Enums (OmegaConf checks membership);
ranges and cross-field rules are checked by :func:`validate`.

Configs compose forward: a recipe file (``conf/recipes/``) may start from another with
``extends: [path, ...]`` (paths relative to the file), a scale preset (``conf/scale/``) is an
overlay of model, engines, trainer and cluster for any recipe, and the command line names them
in order (``selfevo run recipes/self_math scale/llama3_8b_1x8 key=value``): later files, then
the ``key=value`` overrides, win.

Sections: run, model, engine, sampling, recipe, data, train, eval, cluster.
"""

from __future__ import annotations

import difflib
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from selfevo.tasks import TASKS, task_named

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
DEFAULT_CONFIG = "demo"


class ConfigError(ValueError):
    """A config problem, worded for the person who wrote the config.

    Attributes:
        key: the dotted key at fault (``train.zero_stage``), or None for file-level errors.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class Backend(str, enum.Enum):
    auto = "auto"
    hf = "hf"
    vllm = "vllm"


class KVCache(str, enum.Enum):
    auto = "auto"
    static = "static"
    dynamic = "dynamic"


class DType(str, enum.Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class RecipeName(str, enum.Enum):
    self = "self"
    isheep = "isheep"
    mistake_analysis = "mistake_analysis"


class LabelerKind(str, enum.Enum):
    oracle = "oracle"
    openai = "openai"
    local = "local"


class RefineAnswer(str, enum.Enum):
    """Which answer self-refinement ends with (see ``selfevo.stages.refined_answer``)."""

    latest = "latest"
    accepted = "accepted"


class JudgeBy(str, enum.Enum):
    """How a critique becomes a judgement (see ``selfevo.parsers``)."""

    verdict_line = "verdict_line"
    rederived_answer = "rederived_answer"


class TrainMode(str, enum.Enum):
    restart = "restart"
    continual = "continual"
    latest = "latest"


class LRSchedule(str, enum.Enum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


class DataFormat(str, enum.Enum):
    auto = "auto"
    plain = "plain"
    chat = "chat"
    gsm8k = "gsm8k"
    svamp = "svamp"
    self_instruct = "self_instruct"


@dataclass
class RunConfig:
    name: str = "demo"
    output_dir: str = "runs"
    seed: int = 0


@dataclass
class ModelConfig:
    # A hub name (``meta-llama/Llama-3.1-8B-Instruct``), a local directory, or
    # builtin:division-seed or builtin:arithmetic-seed (a demo world's shipped seed model).
    name_or_path: str = "builtin:division-seed"
    tokenizer: str | None = None
    dtype: DType = DType.auto
    trust_remote_code: bool = False
    max_seq_len: int = 512


@dataclass
class EngineConfig:
    backend: Backend = Backend.auto
    num_engines: int = 1
    tensor_parallel_size: int = 1
    cpus_per_engine: float = 0.5
    # CPU threads of each engine's forward pass (0: cpus_per_engine, at least 1). More than
    # the CPUs it reserves is for a machine whose engines and trainer take turns (engines
    # idle while a round trains).
    cpu_threads: int = 0
    # HF backend: the most sequences decoded together in one batch.
    max_batch_size: int = 64
    # HF backend's KV cache: auto (a static cache on CPU where the model takes one, else
    # transformers' dynamic cache), static or dynamic.
    kv_cache: KVCache = KVCache.auto
    # vLLM backend.
    gpu_memory_utilization: float = 0.85
    max_num_seqs: int = 256
    enable_sleep_mode: bool = True
    # On by itself when rounds train unmerged LoRA adapters (train.lora.merge=false).
    enable_lora: bool = False
    max_lora_rank: int = 16
    # Skip CUDA-graph capture / torch.compile: faster start, slower decoding (CPU tests use it).
    enforce_eager: bool = False
    # vLLM's KV cache on CPU (VLLM_CPU_KVCACHE_SPACE), GiB; ignored on GPUs.
    cpu_kvcache_gib: float = 1.0


@dataclass
class SamplingConfig:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    max_new_tokens: int = 256
    # Critique needs room for the step-by-step check and the verdict line after it.
    feedback_max_new_tokens: int = 384
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class LabelerConfig:
    kind: LabelerKind = LabelerKind.oracle
    # OpenAI-compatible endpoint; the key is read from the environment variable named here.
    base_url: str | None = None
    # The endpoint's model name (openai), or the local labeler's checkpoint/hub name (local).
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 5
    concurrency: int = 8


@dataclass
class RecipeConfig:
    name: RecipeName = RecipeName.self
    rounds: int = 2
    task: str = "math"
    template_set: str = "default"
    max_refinements: int = 1
    # verdict_line: the critique's last line ("Judgement: correct|incorrect") decides, as in
    # SELF. rederived_answer: the critique re-derives the answer ("The answer is N") and the
    # response is judged correct when its answer is the same; for critics too small to write
    # a verdict that follows their own working (the demo's).
    judge_by: JudgeBy = JudgeBy.verdict_line
    # SELF's ablation arms (selfevo ablate): self_filter false trains each round on every
    # answer, judged correct or not (the latest refinement); meta_skill_data false leaves
    # the critiques and refinements out of meta-skill learning (QA pairs only).
    self_filter: bool = True
    meta_skill_data: bool = True
    # SELF's meta-skill corpus plus, for tasks that write them (Task.false_alarm), refinement
    # examples on right answers whose check slipped, keeping the answer: without them the
    # refiner changes right answers its critic flags by mistake (not in the paper).
    false_alarm_refinements: bool = True
    # Mistake analysis's ablation arm: false trains each round on the own answers alone,
    # leaving the analyses of induced mistakes out.
    analysis_rows: bool = True
    # Self-assessment (I-SHEEP): keep rows whose scores reach these thresholds (1-10).
    quality_threshold: float = 8.0
    following_threshold: float = 8.0
    # Self-instruct synthesis (I-SHEEP): few-shot prompts per round (each may yield several
    # instructions), tasks per prompt and how many of them are model-written, the
    # near-duplicate cut-off (ROUGE-L F against every seed and accepted instruction) and the
    # rule filter's word bounds.
    synthesize_per_round: int = 0
    synthesis_shots: int = 8
    synthesis_from_generated: int = 2
    rouge_l_threshold: float = 0.7
    instruction_min_words: int = 3
    instruction_max_words: int = 150
    # I-SHEEP and mistake analysis: teach the model the recipe's forms first (synthesis and
    # scoring, or mistakes and their analysis) on oracle-written examples. Only the demo
    # world needs it (its tiny model has no pretraining to follow such prompts zero-shot);
    # the papers start from a pretrained model and skip it.
    skills_warmup: bool = False
    # I-SHEEP's warm-up: synthesis examples per warm-up problem (each after another few-shot
    # list); writing a problem takes a tiny model more practice than scoring one.
    warmup_synthesis_per_problem: int = 1
    labeler: LabelerConfig = field(default_factory=LabelerConfig)


@dataclass
class DataConfig:
    prompt_pool: str = "builtin:division"
    format: DataFormat = DataFormat.auto
    prompts_per_round: int = 256
    meta_train: str | None = None
    meta_examples: int = 512
    # I-SHEEP's seed tasks: a prompt file (e.g. Alpaca's seed_tasks.jsonl) or
    # a demo world's seed split (builtin:division, builtin:arithmetic), of which the first
    # seed_task_count.
    seed_tasks: str | None = None
    seed_task_count: int = 175


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    merge: bool = True


@dataclass
class TrainConfig:
    mode: TrainMode = TrainMode.restart
    # Fraction of the meta-skill corpus mixed into every round's training set.
    meta_mix_ratio: float = 1.0
    zero_stage: int = 2
    num_workers: int = 2
    use_gpu: bool = False
    micro_batch_size: int = 16
    # Micro-batches per optimizer step, on each worker. A step's rows are sorted by length
    # before they are split into micro-batches, so more of them pad less; each worker's
    # gradient is the same (its rows' token-mean loss) however they are split.
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    # The peak learning rate of each self-evolution round's fine-tuning (meta-skill learning
    # uses learning_rate); unset, the rounds use learning_rate too.
    round_learning_rate: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    lr_schedule: LRSchedule = LRSchedule.cosine
    epochs: int = 1
    # The epochs of each self-evolution round's fine-tuning (meta-skill learning uses
    # epochs); unset, the rounds use epochs too.
    round_epochs: int | None = None
    max_steps: int = -1
    max_grad_norm: float = 1.0
    # Sort rows by length within groups of 8 micro-batches, so that batches pad less. Faster,
    # but each micro-batch then holds one kind of example (a mixed corpus's short answers in
    # one, long critiques in the next), which on a small corpus trains the skills in turns:
    # the arithmetic demo's round-0 model scored 0.93 with it and 0.97 without. Off by
    # default (conf/demo_arithmetic.yaml turns it on for speed).
    group_by_length: bool = False
    # Pack each micro-batch's examples into as few rows of model.max_seq_len as they fit,
    # each attending only to itself (position ids restart per example; Hugging Face builds
    # the block-diagonal mask from them). The same examples per step and the same loss as
    # padded rows, with fewer pad tokens computed. Needs attention that reads packed position
    # ids (transformers' sdpa and eager attention do; flash-attention-2 only for one row):
    # each example's loss is checked against padded rows before the first packed step.
    packing: bool = False
    gradient_checkpointing: bool = False
    offload_optimizer: bool = False
    offload_params: bool = False
    checkpoint_every_steps: int = 0
    max_failures: int = 2
    # CPUs each Ray Train worker reserves (fractions leave room for Ray Data on small hosts);
    # on CPU a worker runs this many torch threads, rounded up.
    cpus_per_worker: float = 1.0
    # Peak dense bf16 TFLOP/s of one GPU, for MFU (989 for H100 SXM, ~790 measured on H200).
    gpu_peak_tflops: float = 0.0
    # Record which example ids made up each of the first N optimizer steps, per rank
    # (<output>/batches/rank<r>.jsonl): to check data sharding. 0 turns it off.
    log_batch_ids_steps: int = 0
    # A training file for `selfevo train`: SFT rows or pipeline records (kept rows train).
    data: str | None = None
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class EvalConfig:
    dataset: str = "builtin:division-heldout"
    format: DataFormat = DataFormat.auto
    num_problems: int = 500
    # Self-consistency: sampled answers per problem (0 turns sc@n off) and their temperature.
    sc_samples: int = 5
    sc_temperature: float = 0.7
    # Self-critique of the greedy answers (judge precision/recall) and up to refine_max_iters
    # refinements; off for a model that never learned to critique (I-SHEEP).
    critique: bool = True
    refine_max_iters: int = 2
    # The answer refinement ends with: latest (SELF: the last refinement, whatever its
    # verdict) or accepted (the last answer judged correct; the first response when none was).
    refine_answer: RefineAnswer = RefineAnswer.latest
    # Self-consistency over self-refined answers (SELF's "both"): every sampled answer is
    # critiqued and refined too, and the refined answers vote (sc_refine beside sc).
    sc_refine: bool = False


@dataclass
class ClusterConfig:
    # None starts (or joins, inside ``ray job submit``) a local Ray; else a Ray address.
    address: str | None = None
    num_cpus: int | None = None
    num_nodes: int = 1
    gpus_per_node: int = 0
    gpu_memory_gb: float = 80.0
    # Host memory and CPUs per node, for offloaded optimizer states and CPU reservations
    # (selfevo plan); cpus_per_node 0 leaves CPUs unchecked.
    node_memory_gb: float = 1024.0
    cpus_per_node: int = 0


@dataclass
class ServeConfig:
    # Where `selfevo serve` listens: this machine only unless host says otherwise.
    host: str = "127.0.0.1"
    port: int = 8000
    # Which of a run's models to serve (round0, round2, best, ...); empty serves them all.
    # Each distinct checkpoint gets its own engine pool: at 70B, name the ones you need.
    models: list[str] = field(default_factory=list)
    # The environment variable holding the API key: when it is set, every request must bring
    # it (Authorization: Bearer ...); null never asks for one. The key is never logged or
    # written to disk.
    api_key_env: str | None = "SELFEVO_SERVE_API_KEY"
    # What one request may ask for.
    max_prompt_chars: int = 16000
    max_tokens: int = 1024
    max_n: int = 16
    # Critique-and-refine steps at most in the +refine modes (a request may ask for fewer).
    refine_steps: int = 2
    # Requests answered at once; one more gets 429 (OpenAI's clients retry it with backoff).
    max_concurrent_requests: int = 256


@dataclass
class SelfEvoConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


# (dotted key, predicate, what is expected) checked after the merge.
_RULES: list[tuple[str, Any, str]] = [
    ("run.seed", lambda v: v >= 0, "an integer >= 0"),
    ("model.max_seq_len", lambda v: v > 0, "an integer > 0"),
    ("engine.num_engines", lambda v: v >= 1, "an integer >= 1"),
    ("engine.tensor_parallel_size", lambda v: v >= 1, "an integer >= 1"),
    ("engine.cpus_per_engine", lambda v: v >= 0, "a number >= 0"),
    ("engine.max_batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("engine.gpu_memory_utilization", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("sampling.temperature", lambda v: v >= 0, "a number >= 0"),
    ("sampling.top_p", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("sampling.top_k", lambda v: v >= 0, "an integer >= 0 (0 turns it off)"),
    ("sampling.n", lambda v: v >= 1, "an integer >= 1"),
    ("sampling.max_new_tokens", lambda v: v >= 1, "an integer >= 1"),
    ("sampling.feedback_max_new_tokens", lambda v: v >= 1, "an integer >= 1"),
    ("recipe.rounds", lambda v: v >= 0, "an integer >= 0"),
    ("recipe.max_refinements", lambda v: v >= 0, "an integer >= 0"),
    ("recipe.quality_threshold", lambda v: 1 <= v <= 10, "a score in [1, 10]"),
    ("recipe.following_threshold", lambda v: 1 <= v <= 10, "a score in [1, 10]"),
    ("recipe.rouge_l_threshold", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("recipe.synthesize_per_round", lambda v: v >= 0, "an integer >= 0"),
    ("recipe.synthesis_shots", lambda v: v >= 1, "an integer >= 1"),
    ("recipe.synthesis_from_generated", lambda v: v >= 0, "an integer >= 0"),
    ("engine.cpu_threads", lambda v: v >= 0, "an integer >= 0 (0: from cpus_per_engine)"),
    ("recipe.warmup_synthesis_per_problem", lambda v: v >= 1, "an integer >= 1"),
    ("recipe.instruction_min_words", lambda v: v >= 1, "an integer >= 1"),
    ("recipe.instruction_max_words", lambda v: v >= 1, "an integer >= 1"),
    ("data.seed_task_count", lambda v: v >= 1, "an integer >= 1"),
    ("recipe.labeler.timeout_s", lambda v: v > 0, "a number > 0"),
    ("recipe.labeler.max_retries", lambda v: v >= 0, "an integer >= 0"),
    ("data.prompts_per_round", lambda v: v >= 1, "an integer >= 1"),
    ("train.meta_mix_ratio", lambda v: v >= 0, "a number >= 0"),
    ("train.zero_stage", lambda v: v in (0, 1, 2, 3), "one of [0, 1, 2, 3]"),
    ("train.num_workers", lambda v: v >= 1, "an integer >= 1"),
    ("train.micro_batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("train.gradient_accumulation_steps", lambda v: v >= 1, "an integer >= 1"),
    ("train.learning_rate", lambda v: v > 0, "a number > 0"),
    ("train.round_learning_rate", lambda v: v is None or v > 0, "a number > 0, or null"),
    ("train.warmup_ratio", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("train.epochs", lambda v: v >= 1, "an integer >= 1"),
    ("train.round_epochs", lambda v: v is None or v >= 1, "an integer >= 1, or null"),
    ("train.lora.r", lambda v: v >= 1, "an integer >= 1"),
    ("train.cpus_per_worker", lambda v: v > 0, "a number > 0"),
    ("train.gpu_peak_tflops", lambda v: v >= 0, "a number >= 0"),
    ("train.checkpoint_every_steps", lambda v: v >= 0, "an integer >= 0 (0: only at the end)"),
    ("eval.num_problems", lambda v: v >= 1, "an integer >= 1"),
    ("eval.sc_samples", lambda v: v >= 0, "an integer >= 0 (0 turns sc@n off)"),
    ("eval.sc_temperature", lambda v: v > 0, "a number > 0"),
    ("eval.refine_max_iters", lambda v: v >= 0, "an integer >= 0"),
    ("cluster.num_nodes", lambda v: v >= 1, "an integer >= 1"),
    ("cluster.gpus_per_node", lambda v: v >= 0, "an integer >= 0"),
    ("cluster.gpu_memory_gb", lambda v: v > 0, "a number > 0"),
    ("cluster.node_memory_gb", lambda v: v > 0, "a number > 0"),
    ("cluster.cpus_per_node", lambda v: v >= 0, "an integer >= 0 (0: unchecked)"),
    ("engine.max_num_seqs", lambda v: v >= 1, "an integer >= 1"),
    ("engine.cpu_kvcache_gib", lambda v: v > 0, "a number > 0"),
    ("serve.port", lambda v: 1 <= v <= 65535, "a port in [1, 65535]"),
    ("serve.max_prompt_chars", lambda v: v >= 1, "an integer >= 1"),
    ("serve.max_tokens", lambda v: v >= 1, "an integer >= 1"),
    ("serve.max_n", lambda v: v >= 1, "an integer >= 1"),
    ("serve.refine_steps", lambda v: v >= 0, "an integer >= 0"),
    ("serve.max_concurrent_requests", lambda v: v >= 1, "an integer >= 1"),
]


def all_keys(node: Any = None, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the schema (or of ``node``), e.g. ``train.lora.r``."""
    node = OmegaConf.structured(SelfEvoConfig) if node is None else node
    keys = []
    for name in node:
        child = node._get_node(name)
        dotted = f"{prefix}{name}"
        if isinstance(child, DictConfig):
            keys.extend(all_keys(child, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _nearest_keys(bad_key: str) -> list[str]:
    valid = all_keys()
    # "lora.r" most likely meant "train.lora.r": a valid key that ends with the attempt.
    near = [k for k in valid if k.endswith("." + bad_key)][:3]
    near = near or difflib.get_close_matches(bad_key, valid, n=3, cutoff=0.6)
    if not near:
        leaf = bad_key.rsplit(".", 1)[-1]
        near = [k for k in valid if k.rsplit(".", 1)[-1] == leaf][:3]
    if not near:
        section = bad_key.split(".", 1)[0]
        near = [k for k in valid if k.startswith(section + ".")][:6]
    return near


def _explain(exc: OmegaConfBaseException, origin: str, attempted: str | None = None) -> ConfigError:
    """Reword an OmegaConf error; ``attempted`` is the whole dotted key of an override."""
    key = exc.full_key or exc.key
    if isinstance(exc, ConfigKeyError):
        if attempted and attempted.startswith(str(key)):
            key = attempted
        near = _nearest_keys(str(key))
        hint = f"; nearest valid keys: {', '.join(near)}" if near else ""
        return ConfigError(f"{origin}: unknown config key '{key}'{hint}", key=str(key))
    reason = str(exc.msg).splitlines()[0] if exc.msg else str(exc)
    if isinstance(exc, ValidationError):
        return ConfigError(f"{origin}: bad value for '{key}': {reason}", key=str(key))
    return ConfigError(f"{origin}: {reason} (key '{key}')", key=str(key))


def resolve_config_path(name: str) -> Path:
    """Find a config by path, or by name under ``conf/`` (``demo``, ``recipes/self_math``)."""
    candidates = [Path(name)]
    if not name.endswith((".yaml", ".yml")):
        candidates.append(Path(name + ".yaml"))
    candidates += [CONF_DIR / c for c in list(candidates)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file not found: {name} (looked in . and {CONF_DIR})")


def _read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, Any]]:
    """The YAML at ``path`` preceded by every file it ``extends``, base first."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{path}: 'extends' forms a cycle: {chain}")
    try:
        content = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends: name the file and line
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(content, DictConfig):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections")
    parents = content.pop("extends", None)
    if isinstance(parents, str):
        parents = [parents]
    chain: list[tuple[Path, Any]] = []
    for parent in parents or []:
        chain += _read_yaml_chain(path.parent / str(parent), (*seen, path))
    chain.append((path, content))
    return chain


def split_configs_and_overrides(tokens: list[str]) -> tuple[list[str], list[str]]:
    """Command-line words as (config names, ``key=value`` overrides), each in order."""
    configs = [t for t in tokens if "=" not in t or Path(t).is_file()]
    return configs, [t for t in tokens if t not in configs]


def load_config(
    name: str | list[str] | None = None, overrides: list[str] | None = None
) -> SelfEvoConfig:
    """Load, merge and validate a config.

    Args:
        name: a YAML path or a name under ``conf/``, or several merged in order (a recipe,
            then a scale preset); None means the schema defaults.
        overrides: ``key=value`` strings applied last.

    Returns:
        The validated config as dataclass instances.

    Raises:
        ConfigError: naming the file or override and the key at fault.
    """
    merged = OmegaConf.structured(SelfEvoConfig)
    names = [name] if isinstance(name, str) else list(name or [])
    for path, content in (pair for n in names for pair in _read_yaml_chain(resolve_config_path(n))):
        try:
            merged = OmegaConf.merge(merged, content)
        except OmegaConfBaseException as exc:
            raise _explain(exc, str(path)) from exc
    for override in overrides or []:
        if "=" not in override:
            raise ConfigError(f"override '{override}' is not of the form key=value")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([override]))
        except OmegaConfBaseException as exc:
            attempted = override.split("=", 1)[0].strip()
            raise _explain(exc, f"override '{override}'", attempted) from exc
    config: SelfEvoConfig = OmegaConf.to_object(merged)
    validate(config)
    return config


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def validate(config: SelfEvoConfig) -> None:
    """Check ranges and cross-field rules that the type system cannot express."""
    for key, ok, expected in _RULES:
        value = _get(config, key)
        if not ok(value):
            raise ConfigError(f"bad value for '{key}': expected {expected}, got {value!r}", key)
    if config.recipe.labeler.kind is LabelerKind.openai:
        for key in ("base_url", "model"):
            if not getattr(config.recipe.labeler, key):
                raise ConfigError(
                    f"'recipe.labeler.{key}' is required when recipe.labeler.kind is openai",
                    f"recipe.labeler.{key}",
                )
    if config.recipe.labeler.kind is LabelerKind.local and not config.recipe.labeler.model:
        raise ConfigError(
            "'recipe.labeler.model' (a checkpoint dir or hub name) is required when "
            "recipe.labeler.kind is local",
            "recipe.labeler.model",
        )
    _validate_recipe(config)


def _validate_recipe(config: SelfEvoConfig) -> None:
    recipe = config.recipe
    if recipe.name is RecipeName.isheep:
        if recipe.synthesize_per_round < 1:
            raise ConfigError(
                "recipe.name=isheep synthesizes its prompts: set recipe.synthesize_per_round "
                "(few-shot prompts per round) to at least 1",
                "recipe.synthesize_per_round",
            )
        if not config.data.seed_tasks:
            raise ConfigError(
                "recipe.name=isheep needs data.seed_tasks: a prompt file (e.g. "
                "seed_tasks.jsonl) or a demo world's (builtin:division)",
                "data.seed_tasks",
            )
    if recipe.instruction_min_words > recipe.instruction_max_words:
        raise ConfigError(
            "recipe.instruction_min_words must not exceed recipe.instruction_max_words",
            "recipe.instruction_min_words",
        )
    if config.eval.sc_refine and not (
        config.eval.critique and config.eval.refine_max_iters and config.eval.sc_samples
    ):
        raise ConfigError(
            "eval.sc_refine=true refines the sampled answers: it needs eval.sc_samples >= 1, "
            "eval.critique=true and eval.refine_max_iters >= 1",
            "eval.sc_refine",
        )
    arm_keys = {"self_filter": RecipeName.self, "meta_skill_data": RecipeName.self,
                "analysis_rows": RecipeName.mistake_analysis}  # fmt: skip
    for key, owner in arm_keys.items():
        if recipe.name is not owner and not getattr(recipe, key):
            raise ConfigError(
                f"recipe.{key}=false is one of {owner.value}'s ablation arms; recipe.name is "
                f"{recipe.name.value}",
                f"recipe.{key}",
            )
    if recipe.skills_warmup:
        if recipe.name is RecipeName.self:
            raise ConfigError(
                "recipe.skills_warmup is for isheep and mistake_analysis; SELF's meta-skill "
                "learning always runs",
                "recipe.skills_warmup",
            )
        writers = sorted(name for name, task in TASKS.items() if task.writes_warmups)
        if (
            not task_named(recipe.task).writes_warmups
            or recipe.labeler.kind is not LabelerKind.oracle
        ):
            raise ConfigError(
                "recipe.skills_warmup writes its examples with a task's oracle: it needs "
                f"recipe.task in {writers} and recipe.labeler.kind=oracle",
                "recipe.skills_warmup",
            )


def to_yaml(config: SelfEvoConfig) -> str:
    """The resolved config as YAML (what ``selfevo config show`` prints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def list_config_files() -> list[Path]:
    """Every YAML under ``conf/``, sorted."""
    return sorted(CONF_DIR.rglob("*.yaml"))
