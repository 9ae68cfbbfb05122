"""What a recipe is, and the run context its steps are written against.

A :class:`Recipe` declares its round's steps and a handler for each. A handler is a short
function ``(ctx, round_index) -> (outputs, metrics)`` over a :class:`RunContext`: the one
place where engines are served, stage chains run, models trained and handed off, and records
written. ``actors.context`` implements the context on Ray; the recipes never import it, so
they stay in the light core and read like their papers' loops.

The steps every recipe shares (meta-skill labeling and training, a round's training, the
handoff, evaluation and the report) are in :mod:`selfevo.recipes.steps`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from selfevo.manifest import plan_steps
from selfevo.records import Record
from selfevo.stages import Stage
from selfevo.training import TrainExample

if TYPE_CHECKING:
    from selfevo.config import SelfEvoConfig

StepResult = tuple[dict[str, str], dict[str, Any]]
# Steps that are not a round's: their handlers are called with round index 0.
RUN_STEPS = ("meta.label", "meta.train", "report")


class RunContext(Protocol):
    """What a recipe's steps may ask of the run (``actors.context.RayRunContext``)."""

    config: Any  # selfevo.config.SelfEvoConfig
    run_dir: Path
    recipe: Recipe
    base_model: str
    params: Any  # GenerationParams for answers
    feedback_params: Any  # GenerationParams for critiques and assessments

    def emit(self, line: str) -> None: ...

    def rel(self, path: str | Path) -> str: ...

    def output(self, step: str, key: str) -> Path: ...

    def records_of(self, step: str, key: str = "records") -> list[Record]: ...

    def save_records(self, records: list[Record], path: Path) -> str: ...

    def model_of(self, step: str) -> str: ...

    def start_model(self) -> str: ...

    def current_model(self, round_index: int) -> str: ...

    def run_chain(
        self, records: list[Record], model: str, chain: list[Stage], out_dir: Path, params: Any
    ) -> list[Record]: ...

    def label(self, records: list[Record], out_dir: Path) -> list[Record]: ...

    def train(
        self,
        examples: list[TrainExample],
        start_from: str,
        out_dir: Path,
        config: SelfEvoConfig | None = None,
    ) -> StepResult: ...

    def serve(self, model: str) -> Any: ...

    def evaluate(self, model: str, out_dir: Path) -> dict[str, Any]: ...


Handler = Callable[[RunContext, int], StepResult]


def _meta_on(config: Any) -> bool:
    return True


@dataclass(frozen=True)
class Recipe:
    """A self-evolution method: its round's steps, their handlers, and what it trains on.

    ``meta_corpus`` is what meta.train teaches; ``round_examples`` turns a round's filtered
    records into training examples. ``restart_from_base``: where ``train.mode=latest``
    restarts each round (SELF: the base model M_0; the warm-up recipes: the model the rounds
    started from).
    """

    name: str
    round_steps: tuple[str, ...]
    handlers: Mapping[str, Handler]
    meta_corpus: Callable[[RunContext], list[TrainExample]]
    round_examples: Callable[[RunContext, list[Record]], list[TrainExample]]
    has_meta: Callable[[Any], bool] = _meta_on
    restart_from_base: bool = True
    description: str = field(default="", compare=False)

    def steps(self, config: Any) -> list[str]:
        """Every step of a run of this recipe under ``config``, in order."""
        return plan_steps(config.recipe.rounds, self.round_steps, self.has_meta(config))

    def handler(self, step: str) -> tuple[Handler, int]:
        """The handler of a step name (``round2.filter``, ``meta.label``) and its round index."""
        if step in RUN_STEPS:
            kind, index = step, 0
        else:
            round_name, _, kind = step.partition(".")
            index = int(round_name.removeprefix("round"))
        if kind not in self.handlers:
            raise KeyError(f"recipe {self.name!r} has no handler for step {step!r}")
        return self.handlers[kind], index
