"""The run context on Ray: the one place a run serves engines, runs stage chains, labels,
trains, hands weights off and evaluates. Recipes (:mod:`selfevo.recipes`) call it; it knows
nothing about any recipe beyond what a :class:`~selfevo.recipes.Recipe` declares.

Engines: one pool per run, started on first use. It sleeps while the trainer holds the
devices, and :meth:`RayRunContext.serve` wakes it serving the asked-for model: full weights
are reloaded in place, an unmerged LoRA adapter (``train.lora.merge=false``) is swapped in on
its base. The pool's placement group is named after the run directory, so a resumed run can
release the one its crashed coordinator left.

Manifest outputs are paths relative to the run directory, so a run directory can move.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from actors.evaluate import evaluate, generation_params
from actors.models import adapter_checkpoint, full_weights
from actors.pipeline import run_configured
from actors.pool import EnginePool
from actors.trainer import total_steps, train, write_examples
from selfevo import datasets
from selfevo.config import LabelerKind, SelfEvoConfig
from selfevo.manifest import Manifest
from selfevo.oracle import oracle_label
from selfevo.recipes import Recipe, StepResult
from selfevo.records import Record, read_records, write_records
from selfevo.stages import FEEDBACK, REFINE, Stage, self_chain
from selfevo.tasks import resolve_model
from selfevo.training import TrainExample

# Training metrics the manifest does not keep (paths are outputs; wall time is the step's).
_UNRECORDED = ("output_dir", "skipped", "hf_checkpoint", "wall_seconds")


class _TrainingProgress:
    """Emits the trainer's latest step (from its ``metrics.jsonl``) every ``interval`` seconds
    while training runs: the workers' own output stays in Ray's logs."""

    def __init__(self, metrics: Path, steps: int, emit: Callable[[str], None], interval=15.0):
        self.metrics, self.steps, self.emit, self.interval = metrics, steps, emit, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._shown = 0

    def __enter__(self) -> _TrainingProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            lines = self.metrics.read_text().splitlines() if self.metrics.is_file() else []
            if not lines:
                continue
            try:
                last = json.loads(lines[-1])
            except json.JSONDecodeError:  # caught mid-write; the next look reads it
                continue
            if last["step"] > self._shown:
                self._shown = last["step"]
                self.emit(
                    f"[train] step {last['step']}/{self.steps} loss {last['loss']:.4f} "
                    f"{last['tokens_per_s']:.0f} tok/s"
                )


class RayRunContext:
    """What a recipe's steps ask of a run (:class:`selfevo.recipes.RunContext`), on Ray."""

    def __init__(
        self,
        config: SelfEvoConfig,
        run_dir: Path,
        recipe: Recipe,
        manifest: Manifest,
        emit: Callable[[str], None],
    ):
        self.config, self.run_dir, self.recipe = config, run_dir, recipe
        self.manifest, self.emit = manifest, emit
        self.base_model = resolve_model(config.model.name_or_path)
        self.params, self.feedback_params = generation_params(config)
        self.pool: EnginePool | None = None
        self.serving: str | None = None

    # --- paths and records --------------------------------------------------------------

    def rel(self, path: str | Path) -> str:
        path = Path(path).resolve()
        inside = path.is_relative_to(self.run_dir)
        return str(path.relative_to(self.run_dir)) if inside else str(path)

    def output(self, step: str, key: str) -> Path:
        return self.run_dir / self.manifest.step(step).outputs[key]

    def records_of(self, step: str, key: str = "records") -> list[Record]:
        return read_records(self.output(step, key))

    def save_records(self, records: list[Record], path: Path) -> str:
        return self.rel(write_records(records, path))

    # --- which model ----------------------------------------------------------------------

    def model_of(self, step: str) -> str:
        return str(self.output(step, "model"))

    def start_model(self) -> str:
        """The model rounds start from: M_meta when the run has meta steps, else the base."""
        return self.model_of("meta.train") if self.recipe.has_meta(self.config) else self.base_model

    def current_model(self, round_index: int) -> str:
        """The model that generates in ``round_index``: the previous round's, or the start."""
        if round_index <= 1:
            return self.start_model()
        return self.model_of(f"round{round_index - 1}.train")

    # --- engines --------------------------------------------------------------------------

    def serve(self, model: str) -> EnginePool:
        """The engine pool, awake and serving ``model`` (started or reloaded as needed)."""
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

    def sleep_engines(self) -> None:
        if self.pool is not None:
            self.pool.sleep()

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def run_chain(
        self, records: list[Record], model: str, chain: list[Stage], out_dir: Path, params: Any
    ) -> list[Record]:
        """``records`` through ``chain`` on engines serving ``model``; the rows out."""
        return self._chain_on(self.serve(model), records, chain, out_dir, params)

    def _chain_on(self, pool, records, chain, out_dir, params) -> list[Record]:
        return run_configured(
            records,
            pool.router,
            chain,
            out_dir,
            self.config,
            params,
            self.feedback_params,
            self.emit,
        )

    # --- labeling, training, evaluation ---------------------------------------------------

    def label(self, records: list[Record], out_dir: Path) -> list[Record]:
        """Judge (and correct) pending answers with ``recipe.labeler``."""
        kind = self.config.recipe.labeler.kind
        pending = [r for r in records if r.status == "pending"]
        if kind is LabelerKind.oracle:
            for record in pending:
                oracle_label(record)
        elif kind is LabelerKind.openai:
            from actors.labelers import OpenAILabeler

            labeler = self.config.recipe.labeler
            OpenAILabeler.from_config(labeler, self.config.recipe.template_set).label(pending)
        else:
            records = self._label_locally(records, out_dir)
        return records

    def _label_locally(self, records: list[Record], out_dir: Path) -> list[Record]:
        """A stronger local model (``recipe.labeler.model``) critiques and refines."""
        self.sleep_engines()
        judge_by = self.config.recipe.judge_by.value
        chain = self_chain(1, [FEEDBACK, REFINE], with_filter=False, judge_by=judge_by)
        greedy = self.params.with_(temperature=0.0)
        labeler = self.config.recipe.labeler.model
        with EnginePool.from_config(self.config, model_path=labeler) as pool:
            return self._chain_on(pool, records, chain, out_dir / "label", greedy)

    def train(
        self,
        examples: list[TrainExample],
        start_from: str,
        out_dir: Path,
        config: SelfEvoConfig | None = None,
    ) -> StepResult:
        """Fine-tune ``start_from`` on ``examples`` into ``out_dir/model`` (engines asleep),
        with ``config``'s training settings (a round's: :func:`selfevo.training.round_training`)
        or the run's."""
        config = config or self.config
        training_set = write_examples(examples, out_dir / "training_set.parquet")
        self.sleep_engines()
        sources: dict[str, int] = {}
        for example in examples:
            sources[example.source] = sources.get(example.source, 0) + 1
        self.emit(f"[train] {len(examples)} examples {sources} from {start_from}")
        tokenizer = config.model.tokenizer or start_from
        steps = total_steps(config.train, len(examples))
        with _TrainingProgress(out_dir / "model" / "metrics.jsonl", steps, self.emit):
            summary = train(
                config, training_set, start_from, out_dir / "model", tokenizer_path=tokenizer
            )
        self.emit(
            f"[train] {summary.steps} steps, final loss {summary.final_loss}, "
            f"{summary.wall_seconds:.1f}s"
        )
        metrics = {k: v for k, v in asdict(summary).items() if k not in _UNRECORDED}
        outputs = {"model": self.rel(summary.hf_checkpoint), "training_set": self.rel(training_set)}
        return outputs, {**metrics, "sources": sources, "started_from": self.rel(start_from)}

    def evaluate(self, model: str, out_dir: Path) -> dict[str, Any]:
        """Held-out metrics of ``model`` (written to ``out_dir/metrics.json``)."""
        router = self.serve(model).router
        problems = datasets.eval_problems(self.config)
        return evaluate(self.config, router, problems, out_dir, self.emit)
