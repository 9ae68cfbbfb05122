"""I-SHEEP's run: synthesize -> answer -> self-assess -> filter -> fine-tune, each round.

The round logic is in :mod:`selfevo.isheep`; this driver runs it on the engine pool and
writes, per round: ``synthesis.parquet`` (each few-shot prompt, kept or rejected),
``candidates.parquet`` (each candidate instruction with its verdict and reason),
``prompts.parquet`` (the accepted instructions), the answered and assessed records and
``filtered.parquet``. Training follows ``train.mode`` (I-SHEEP's default is ``latest``: the
starting model fine-tuned on the newest round's data only).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from actors.coordinator import WarmupRun, read_records, write_records
from selfevo import arithmetic, isheep
from selfevo.evaluation import filter_quality
from selfevo.readers import read_prompts
from selfevo.records import Record, status_counts
from selfevo.stages import ASSESS_FOLLOWING, ASSESS_QUALITY, GENERATE, chain_of, expand_samples
from selfevo.training import TrainExample

SEED_BUILTIN = "builtin:arithmetic"


def seed_tasks(config) -> list[tuple[str, str]]:
    """(id, text) of the configured seed tasks."""
    source, count = config.data.seed_tasks, config.data.seed_task_count
    if source == SEED_BUILTIN:
        problems = arithmetic.make_problems("seed", count, seed=config.run.seed)
        return [(p.id, p.question) for p in problems]
    if source.startswith("builtin:"):
        raise ValueError(f"unknown builtin seed tasks {source!r}; known: {SEED_BUILTIN}")
    records = read_prompts(source, "auto", task=config.recipe.task).raise_if_bad().records
    return [(r.prompt_id, r.question_text()) for r in records[:count]]


class ISheepRun(WarmupRun):
    recipe = "isheep"

    def _meta_corpus(self) -> list[TrainExample]:
        recipe = self.config.recipe
        return isheep.warmup_examples(
            read_records(self._output("meta.label", "labeled")),
            [text for _, text in seed_tasks(self.config)],
            seed=self.config.run.seed,
            shots=recipe.synthesis_shots,
            from_generated=recipe.synthesis_from_generated,
            template_set=recipe.template_set,
        )

    def _accepted_before(self, index: int) -> list[tuple[str, str]]:
        accepted = []
        for i in range(1, index):
            table = pq.read_table(self._output(f"round{i}.synthesize", "prompts"))
            accepted += zip(table["id"].to_pylist(), table["prompt"].to_pylist(), strict=True)
        return accepted

    def _make_prompt(self, index: int):
        task = self.config.recipe.task

        def make(candidate_id: str, text: str) -> Record:
            if task == arithmetic.TASK:
                record = arithmetic.problem_record(text, candidate_id)
            else:
                record = Record(id=candidate_id, prompt_id=candidate_id, prompt=text, task=task)
                record.source = "synthesized"
            record.round = index
            return record

        return make

    def round_synthesize(self, index: int) -> tuple[dict, dict]:
        recipe, out = self.config.recipe, self.run_dir / f"round{index}"
        seeds = seed_tasks(self.config)
        earlier = self._accepted_before(index)
        rows = isheep.synthesis_rows(
            [text for _, text in seeds],
            [text for _, text in earlier],
            recipe.synthesize_per_round,
            index,
            seed=self.config.run.seed,
            shots=recipe.synthesis_shots,
            from_generated=recipe.synthesis_from_generated,
            task=recipe.task,
            template_set=recipe.template_set,
        )
        rows = self._pipeline(
            rows, self._current_model(index), chain_of(GENERATE), out / "synthesis", self.params
        )
        result = isheep.accept_synthesized(
            rows,
            seeds + earlier,
            threshold=recipe.rouge_l_threshold,
            min_words=recipe.instruction_min_words,
            max_words=recipe.instruction_max_words,
            make_prompt=self._make_prompt(index),
        )
        outputs = {
            "synthesis": self._rel(write_records(result.rows, out / "synthesis.parquet")),
            "candidates": self._rel(_write_decisions(result.decisions, out / "candidates.parquet")),
            "prompts": self._rel(write_records(result.prompts, out / "prompts.parquet")),
        }
        reasons = Counter(
            (d.reason or "").split(":", 1)[0] for d in result.decisions if not d.accepted
        )
        metrics = {
            "synthesis_prompts": len(rows),
            "candidates": len(result.decisions),
            "accepted": len(result.prompts),
            "rejected": dict(reasons),
            "with_gold": sum(1 for p in result.prompts if p.gold is not None),
        }
        self.emit(
            f"[round{index}.synthesize] {metrics['accepted']}/{metrics['candidates']} new "
            f"instructions accepted; rejected: {dict(reasons)}"
        )
        return outputs, metrics

    def round_generate(self, index: int) -> tuple[dict, dict]:
        prompts = read_records(self._output(f"round{index}.synthesize", "prompts"))
        if not prompts:
            self.emit(
                f"[round{index}.generate] warning: no synthesized instruction passed the "
                f"filters (see round{index}/candidates.parquet); this round trains on the "
                "warm-up replay alone"
            )
        records = expand_samples(prompts, self.config.sampling.n, index)
        records, outputs = self._round_pipeline(
            index, "generate", records, chain_of(GENERATE), self.params
        )
        return outputs, {"prompts": len(prompts), **status_counts(records)}

    def round_assess(self, index: int) -> tuple[dict, dict]:
        records = read_records(self._output(f"round{index}.generate", "records"))
        chain = chain_of(ASSESS_QUALITY, ASSESS_FOLLOWING)
        records, outputs = self._round_pipeline(
            index, "assess", records, chain, self.feedback_params
        )
        return outputs, status_counts(records)

    def round_filter(self, index: int) -> tuple[dict, dict]:
        recipe = self.config.recipe
        records = read_records(self._output(f"round{index}.assess", "records"))
        for record in records:
            isheep.score_filter(record, recipe.quality_threshold, recipe.following_threshold)
        quality = {**filter_quality(records), **isheep.score_quality(records)}
        quality.pop("judge", None)  # I-SHEEP has no critic: the filter is the scores
        return self._filtered(index, records, quality)


def _write_decisions(decisions, path: Path) -> str:
    rows = [
        {"id": d.id, "instruction": d.instruction, "accepted": d.accepted, "reason": d.reason}
        for d in decisions
    ]
    schema = pa.schema(
        [("id", pa.string()), ("instruction", pa.string()), ("accepted", pa.bool_()),
         ("reason", pa.string())]
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return str(path)
