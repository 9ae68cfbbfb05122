"""The coordinator actor: owns a run's manifest, its engine pool and the current weights.

It walks the manifest's state machine (:mod:`selfevo.manifest`); for SELF::

    meta.label -> meta.train -> round0.eval ->
    [roundN.generate -> roundN.critique -> roundN.filter -> roundN.train -> roundN.handoff
     -> roundN.eval] x T -> report

:class:`RunDriver` holds what every recipe shares (engines, weights, labeling, training,
evaluation, the report); :class:`SelfRun` adds SELF's round steps, and
:mod:`actors.isheep` and :mod:`actors.mistake_analysis` the other recipes'.

Each step reads what earlier steps wrote (paths in the manifest), writes its own outputs
under the run directory and finishes in the manifest, so a killed run resumes at the first
unfinished step. The engines sleep while the trainer holds the devices; the handoff reloads
the new weights in place (or swaps in a LoRA adapter) and wakes them.

The coordinator is a zero-CPU threaded actor: ``run`` executes the steps in one thread while
the driver polls ``drain_log`` from another for progress lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray

from actors.evaluate import evaluate, generation_params
from actors.models import adapter_checkpoint, full_weights
from actors.pipeline import run_pipeline
from actors.pool import EnginePool
from actors.trainer import train, write_examples
from selfevo import datasets
from selfevo.config import LabelerKind, RecipeName, SelfEvoConfig, to_yaml
from selfevo.evaluation import filter_quality
from selfevo.manifest import Manifest, config_hash
from selfevo.oracle import oracle_label
from selfevo.records import Record, records_to_table, status_counts, table_to_records
from selfevo.report import write_report
from selfevo.stages import (
    FEEDBACK,
    GENERATE,
    REFINE,
    REJUDGE,
    Stage,
    expand_samples,
    finalize,
    self_chain,
)
from selfevo.training import (
    TrainExample,
    examples_from_records,
    meta_examples,
    mix_training_set,
    qa_examples,
    shuffled,
    starting_model,
)


def resolve_model(name_or_path: str) -> str:
    """``builtin:arithmetic-seed`` is the demo world's shipped seed; anything else is as given."""
    if name_or_path == "builtin:arithmetic-seed":
        from actors.demo_seed import SEED_DIR

        if not (SEED_DIR / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"the demo seed model is missing from {SEED_DIR}; rebuild it with "
                f"`selfevo demo seed --output {SEED_DIR}`"
            )
        return str(SEED_DIR)
    if name_or_path.startswith("builtin:"):
        raise ValueError(f"unknown builtin model {name_or_path!r}; known: builtin:arithmetic-seed")
    return name_or_path


def read_records(path: str | Path) -> list[Record]:
    return table_to_records(pq.read_table(path))


def write_records(records: list[Record], path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(records_to_table(records), path)
    return str(path)


class RunDriver:
    """What every recipe's run shares; subclasses add their round steps as
    ``round_<step>(index)`` methods and say what a round trains on (:meth:`round_examples`).
    :class:`Coordinator` is the actor wrapper."""

    recipe = "self"

    def __init__(self, config: SelfEvoConfig, run_dir: str, fault_after: str | None = None):
        from omegaconf import OmegaConf

        self.config, self.run_dir = config, Path(run_dir).resolve()
        self.fault_after = fault_after
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(to_yaml(config))
        resolved = OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)
        self.manifest = Manifest.open(
            self.run_dir,
            config_hash(resolved),
            config.recipe.rounds,
            self.recipe,
            meta=self.has_meta,
        )
        self.base_model = resolve_model(config.model.name_or_path)
        self.pool: EnginePool | None = None
        self.serving: str | None = None
        self.params, self.feedback_params = generation_params(config)

    @property
    def has_meta(self) -> bool:
        """Whether the run starts with meta.label and meta.train (SELF always does)."""
        return True

    # --- logging ------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)
        with (self.run_dir / "run.log").open("a") as log:
            log.write(line + "\n")

    def drain(self) -> list[str]:
        with self.lock:
            lines, self.lines = self.lines, []
        return lines

    # --- the state machine --------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        if self.manifest.complete():
            self.emit(f"{self.run_dir}: every step is done; nothing to run")
        try:
            while (name := self.manifest.next_step()) is not None:
                self.emit(f"[{name}] started")
                self.manifest.start(name)
                started = time.perf_counter()
                outputs, metrics = self._dispatch(name)
                self.manifest.finish(name, outputs, metrics)
                self.emit(f"[{name}] done in {time.perf_counter() - started:.1f}s")
                if name == self.fault_after:
                    self.emit(f"[{name}] fault injected: the coordinator exits now")
                    os._exit(1)
        finally:
            if self.pool is not None:
                self.pool.shutdown()
                self.pool = None
        return json.loads((self.run_dir / "summary.json").read_text())

    def _dispatch(self, name: str) -> tuple[dict[str, str], dict[str, Any]]:
        if name in ("meta.label", "meta.train", "report"):
            return getattr(self, name.replace(".", "_"))()
        round_name, kind = name.split(".")
        return getattr(self, f"round_{kind}")(int(round_name.removeprefix("round")))

    # --- engines and weights ------------------------------------------------------------

    def _serve(self, model: str) -> EnginePool:
        """The engine pool, awake and serving ``model`` (started or reloaded as needed).

        A checkpoint of full weights is reloaded in place; an unmerged LoRA adapter (a round
        trained with ``train.lora.merge=false``) is swapped in on its base.
        """
        adapter = adapter_checkpoint(model)
        weights = full_weights(adapter[0]) if adapter else model
        if self.pool is None:
            self.emit(f"[engines] starting {self.config.engine.num_engines} engine(s) on {weights}")
            self.pool = EnginePool.from_config(
                self.config, model_path=weights, name=f"selfevo-engines:{self.run_dir}"
            )
            self.pool.wait_ready()
            self.serving = weights
        self.pool.wake()
        if self.serving != model and adapter:
            self.pool.load_lora(adapter[1], weights)
        elif self.serving != model:
            self.pool.load_weights(model)
        self.serving = model
        return self.pool

    def _pipeline(
        self, records: list[Record], model: str, chain: list[Stage], out_dir: Path, params
    ) -> list[Record]:
        pool = self._serve(model)
        result = run_pipeline(
            records,
            pool.router,
            chain,
            out_dir,
            params=params,
            feedback_params=self.feedback_params,
            template_set=self.config.recipe.template_set,
            batch_size=self.config.engine.max_batch_size,
            emit=self.emit,
        )
        return read_records(result.output_path)

    def _round_pipeline(
        self, index: int, step: str, rows: list[Record], chain: list[Stage], params
    ) -> tuple[list[Record], dict[str, str]]:
        """Run the round's current model over ``rows`` into ``round<index>/<step>``; the rows
        out, and the step's manifest outputs (``records``)."""
        out = self.run_dir / f"round{index}" / step
        records = self._pipeline(rows, self._current_model(index), chain, out, params)
        return records, {"records": self._rel(out / "output.parquet")}

    # Manifest outputs are paths relative to the run directory, so a run dir can move.
    def _rel(self, path: str | Path) -> str:
        path = Path(path).resolve()
        return (
            str(path.relative_to(self.run_dir)) if path.is_relative_to(self.run_dir) else str(path)
        )

    def _output(self, step: str, key: str) -> Path:
        return self.run_dir / self.manifest.step(step).outputs[key]

    def _model_of(self, step: str) -> str:
        return str(self._output(step, "model"))

    def _start_model(self) -> str:
        """The model rounds start from: M_meta when the run has meta steps, else the base."""
        return self._model_of("meta.train") if self.has_meta else self.base_model

    def _current_model(self, round_index: int) -> str:
        """The model that generates in ``round_index``: the previous round's, or the start."""
        if round_index <= 1:
            return self._start_model()
        return self._model_of(f"round{round_index - 1}.train")

    def _train(
        self, examples, start_from: str, out_dir: Path, learning_rate: float | None = None
    ) -> tuple[dict, dict]:
        training_set = write_examples(examples, out_dir / "training_set.parquet")
        if self.pool is not None:
            self.pool.sleep()
        sources: dict[str, int] = {}
        for example in examples:
            sources[example.source] = sources.get(example.source, 0) + 1
        self.emit(f"[train] {len(examples)} examples {sources} from {start_from}")
        summary = train(
            self.config,
            training_set,
            start_from,
            out_dir / "model",
            tokenizer_path=self.config.model.tokenizer or start_from,
            learning_rate=learning_rate,
        )
        self.emit(
            f"[train] {summary.steps} steps, final loss {summary.final_loss}, "
            f"{summary.wall_seconds:.1f}s"
        )
        metrics = {
            k: v
            for k, v in asdict(summary).items()
            if k not in ("output_dir", "skipped", "hf_checkpoint", "wall_seconds")
        }
        outputs = {
            "model": self._rel(summary.hf_checkpoint),
            "training_set": self._rel(training_set),
        }
        return outputs, {**metrics, "sources": sources, "started_from": self._rel(start_from)}

    # --- meta-skill learning ------------------------------------------------------------

    def meta_label(self) -> tuple[dict, dict]:
        out = self.run_dir / "meta"
        prompts = datasets.meta_prompts(self.config)
        records = expand_samples(prompts, 1, 0)
        chain = self_chain(0, [GENERATE], with_filter=False)
        records = self._pipeline(records, self.base_model, chain, out / "generate", self.params)
        records = self._label(records, out)
        counts = status_counts(records)
        judged = [r.judgement for r in records if r.judgement]
        metrics = {
            "prompts": len(prompts),
            "labeler": self.config.recipe.labeler.kind.value,
            "judged_correct": judged.count("correct"),
            "judged_incorrect": judged.count("incorrect"),
            "labeler_errors": counts.get("rejected:labeler_error", 0),
            "counts": counts,
        }
        self.emit(
            f"[meta.label] {metrics['judged_correct']} correct, "
            f"{metrics['judged_incorrect']} incorrect, "
            f"{metrics['labeler_errors']} labeler errors"
        )
        return {"labeled": self._rel(write_records(records, out / "labeled.parquet"))}, metrics

    def _label(self, records: list[Record], out: Path) -> list[Record]:
        kind = self.config.recipe.labeler.kind
        pending = [r for r in records if r.status == "pending"]
        if kind is LabelerKind.oracle:
            for record in pending:
                oracle_label(record)
        elif kind is LabelerKind.openai:
            from actors.labelers import OpenAILabeler

            OpenAILabeler.from_config(
                self.config.recipe.labeler, self.config.recipe.template_set
            ).label(pending)
        else:
            records = self._label_locally(records, out)
        return records

    def _label_locally(self, records: list[Record], out: Path) -> list[Record]:
        """A stronger local model (``recipe.labeler.model``) critiques and refines."""
        labeler_model = self.config.recipe.labeler.model
        if self.pool is not None:
            self.pool.sleep()
        pool = EnginePool.from_config(self.config, model_path=labeler_model)
        try:
            chain = self_chain(
                1, [FEEDBACK, REFINE], with_filter=False, judge_by=self.config.recipe.judge_by.value
            )
            result = run_pipeline(
                records,
                pool.router,
                chain,
                out / "label",
                params=self.params.with_(temperature=0.0),
                feedback_params=self.feedback_params,
                template_set=self.config.recipe.template_set,
                batch_size=self.config.engine.max_batch_size,
                emit=self.emit,
            )
        finally:
            pool.shutdown()
        return read_records(result.output_path)

    def _meta_corpus(self) -> list[TrainExample]:
        """What meta.train teaches (SELF: D_meta and QA pairs; a warm-up: the recipe's forms)."""
        labeled = read_records(self._output("meta.label", "labeled"))
        template_set = self.config.recipe.template_set
        return meta_examples(labeled, template_set) + qa_examples(labeled, template_set)

    def meta_train(self) -> tuple[dict, dict]:
        corpus = shuffled(self._meta_corpus(), self.config.run.seed)
        return self._train(corpus, self.base_model, self.run_dir / "meta")

    # --- a self-evolution round ---------------------------------------------------------

    def round_eval(self, index: int) -> tuple[dict, dict]:
        model = self._start_model() if index == 0 else self._model_of(f"round{index}.train")
        pool = self._serve(model)
        out = self.run_dir / f"round{index}" / "eval"
        metrics = evaluate(
            self.config, pool.router, datasets.eval_problems(self.config), out, self.emit
        )
        self.emit(
            f"[round{index}.eval] direct {metrics['direct']['acc']:.3f}"
            + (f" refine {metrics['refine']['acc']:.3f}" if "refine" in metrics else "")
            + (f" sc {metrics['sc']['acc']:.3f}" if "sc" in metrics else "")
        )
        return {"metrics": self._rel(out / "metrics.json")}, metrics

    def round_examples(self, records: list[Record]) -> list[TrainExample]:
        """What a round's filtered records train (SELF: the kept answers)."""
        return examples_from_records(records)

    def _origin_model(self) -> str:
        """Where ``latest`` training restarts from: the base model (SELF's M_0)."""
        return self.base_model

    def round_train(self, index: int) -> tuple[dict, dict]:
        train_cfg = self.config.train
        rounds = [
            self.round_examples(read_records(self._output(f"round{i}.filter", "records")))
            for i in range(1, index + 1)
        ]
        examples = mix_training_set(
            train_cfg.mode.value,
            self._meta_corpus() if self.has_meta else [],
            rounds,
            train_cfg.meta_mix_ratio,
            seed=self.config.run.seed + index,
        )
        if not examples:
            raise RuntimeError(
                f"round {index} has nothing to train on: its filter kept no rows and "
                "train.meta_mix_ratio mixes in no meta examples"
            )
        previous = self._model_of(f"round{index - 1}.train") if index > 1 else None
        meta_model = self._model_of("meta.train") if self.has_meta else None
        start = starting_model(train_cfg.mode.value, self._origin_model(), meta_model, previous)
        return self._train(
            examples, start, self.run_dir / f"round{index}", train_cfg.round_learning_rate
        )

    def round_handoff(self, index: int) -> tuple[dict, dict]:
        model = self._model_of(f"round{index}.train")
        pool = self._serve(model)
        stats = pool.stats()
        self.emit(f"[round{index}.handoff] engines serve {self._rel(model)}")
        return {"model": self._rel(model)}, {
            "engines": len(stats["engines"]),
            "engines_awake": sum(not e["sleeping"] for e in stats["engines"]),
            "backends": sorted({e["extra"].get("backend", "?") for e in stats["engines"]}),
        }

    def _filtered(
        self, index: int, records: list[Record], quality: dict[str, Any], line: str | None = None
    ) -> tuple[dict, dict]:
        """Write a round's filtered records and report the filter's quality (``line``, or
        kept/generated with kept vs all accuracy)."""
        path = write_records(records, self.run_dir / f"round{index}" / "filtered.parquet")
        if line is None:
            line = f"kept {quality['kept']}/{quality['generated']}"
            if quality["kept_acc"] is not None and quality["all_acc"] is not None:
                line += f", kept acc {quality['kept_acc']:.3f} vs all {quality['all_acc']:.3f}"
        self.emit(f"[round{index}.filter] {line}")
        return {"records": self._rel(path)}, {**quality, "counts": status_counts(records)}

    def report(self) -> tuple[dict, dict]:
        summary = write_report(self.run_dir)
        return {"summary": "summary.json"}, {"rounds": len(summary["rounds"])}


class SelfRun(RunDriver):
    """SELF's round: generate -> self-feedback and self-refinement -> self-filter."""

    def round_generate(self, index: int) -> tuple[dict, dict]:
        prompts = datasets.pool_slice(self.config, index)
        records = expand_samples(prompts, self.config.sampling.n, index)
        chain = self_chain(0, [GENERATE], with_filter=False)
        records, outputs = self._round_pipeline(index, "generate", records, chain, self.params)
        return outputs, {"prompts": len(prompts), **status_counts(records)}

    def round_critique(self, index: int) -> tuple[dict, dict]:
        records = read_records(self._output(f"round{index}.generate", "records"))
        chain = self_chain(
            self.config.recipe.max_refinements,
            [FEEDBACK, REFINE, REJUDGE],
            with_filter=False,
            judge_by=self.config.recipe.judge_by.value,
        )
        records, outputs = self._round_pipeline(index, "critique", records, chain, self.params)
        refined = sum(1 for r in records if r.refined_response is not None)
        return outputs, {
            "rows": len(records),
            "refined": refined,
            **status_counts(records),
        }

    def round_filter(self, index: int) -> tuple[dict, dict]:
        records = read_records(self._output(f"round{index}.critique", "records"))
        for record in records:
            finalize(record)
        return self._filtered(index, records, filter_quality(records))


class WarmupRun(RunDriver):
    """A recipe whose meta steps are an optional warm-up (``recipe.skills_warmup``) and whose
    rounds restart from the model they started with (the warmed-up one, else the base)."""

    @property
    def has_meta(self) -> bool:
        return self.config.recipe.skills_warmup

    def _origin_model(self) -> str:
        return self._start_model()


def driver_class(config: SelfEvoConfig) -> type[RunDriver]:
    """The run driver of ``config``'s recipe."""
    if config.recipe.name is RecipeName.isheep:
        from actors.isheep import ISheepRun

        return ISheepRun
    if config.recipe.name is RecipeName.mistake_analysis:
        from actors.mistake_analysis import MistakeAnalysisRun

        return MistakeAnalysisRun
    return SelfRun


@ray.remote(num_cpus=0, max_concurrency=4)
class Coordinator:
    """The run's owner, as a Ray actor (see :class:`RunDriver` for what it does)."""

    def __init__(self, config: SelfEvoConfig, run_dir: str, fault_after: str | None = None):
        self.driver = driver_class(config)(config, run_dir, fault_after)

    def run(self) -> dict[str, Any]:
        try:
            return self.driver.run()
        except Exception:
            self.driver.emit(traceback.format_exc())
            raise

    def drain_log(self) -> list[str]:
        return self.driver.drain()


def _labeler_env(config: SelfEvoConfig) -> dict[str, Any] | None:
    """The labeler's API key, handed from the driver's environment to the coordinator's.

    It travels only in the actor's runtime environment: never in the config, the manifest,
    the run directory or the log. A driver without the variable hands nothing (a cluster may
    set it on its nodes instead).
    """
    labeler = config.recipe.labeler
    key = os.environ.get(labeler.api_key_env) if labeler.kind is LabelerKind.openai else None
    return {"env_vars": {labeler.api_key_env: key}} if key else None


def run_recipe(
    config: SelfEvoConfig, emit=print, poll_s: float = 1.0, fault_after: str | None = None
) -> dict[str, Any]:
    """Run (or resume) ``config``'s recipe under a coordinator actor; returns the summary."""
    run_dir = str(Path(config.run.output_dir).resolve() / config.run.name)
    fault_after = fault_after or os.environ.get("SELFEVO_FAULT_AFTER")
    coordinator = Coordinator.options(runtime_env=_labeler_env(config)).remote(
        config, run_dir, fault_after
    )
    pending = coordinator.run.remote()
    try:
        done: list = []
        while not done:
            done, _ = ray.wait([pending], timeout=poll_s)
            with contextlib.suppress(ray.exceptions.RayActorError):  # a killed coordinator
                for line in ray.get(coordinator.drain_log.remote()):
                    emit(line)
        return ray.get(pending)
    finally:
        ray.kill(coordinator)
