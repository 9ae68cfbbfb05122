"""Mistake analysis's run: own answers and induced mistakes -> guided analysis -> filter ->
fine-tune on the analyses (unguided prompts) and the own answers, each round.

The round logic is in :mod:`selfevo.mistakes`; prompts come from the pool like SELF's
(``data.prompts_per_round`` fresh ones per round).
"""

from __future__ import annotations

from actors.coordinator import WarmupRun, read_records
from selfevo import datasets, mistakes
from selfevo.records import Record, status_counts
from selfevo.stages import ANALYZE, GENERATE, INDUCE, chain_of
from selfevo.training import TrainExample


class MistakeAnalysisRun(WarmupRun):
    recipe = "mistake_analysis"

    def _meta_corpus(self) -> list[TrainExample]:
        labeled = read_records(self._output("meta.label", "labeled"))
        return mistakes.warmup_examples(labeled, self.config.recipe.template_set)

    def round_examples(self, records: list[Record]) -> list[TrainExample]:
        return mistakes.training_examples(records, self.config.recipe.template_set)

    def round_generate(self, index: int) -> tuple[dict, dict]:
        prompts = datasets.pool_slice(self.config, index)
        rows = mistakes.round_rows(prompts, index)
        chain = chain_of(GENERATE, INDUCE)
        rows, outputs = self._round_pipeline(index, "generate", rows, chain, self.params)
        return outputs, {"prompts": len(prompts), **status_counts(rows)}

    def round_analyze(self, index: int) -> tuple[dict, dict]:
        rows = read_records(self._output(f"round{index}.generate", "records"))
        rows, outputs = self._round_pipeline(
            index, "analyze", rows, chain_of(ANALYZE), self.feedback_params
        )
        return outputs, status_counts(rows)

    def round_filter(self, index: int) -> tuple[dict, dict]:
        rows = mistakes.finalize_round(
            read_records(self._output(f"round{index}.analyze", "records"))
        )
        quality = mistakes.round_quality(rows)
        line = (
            f"kept {quality['kept_answers']} own answers and {quality['kept_analyses']} "
            f"analyses of {quality['generated']} rows; induced responses wrong: "
            f"{quality['induced_wrong']}"
        )
        return self._filtered(index, rows, quality, line)
