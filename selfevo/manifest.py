"""The run manifest: the round state machine of a self-evolution run, kept on disk.

A run is an ordered list of steps: the two meta steps when the recipe has them, round 0's
evaluation, each round's steps as its recipe declares them (:mod:`selfevo.recipes`), and the
report. For SELF:

    meta.label -> meta.train -> round0.eval ->
    [roundN.generate -> roundN.critique -> roundN.filter -> roundN.train -> roundN.handoff
     -> roundN.eval] for N = 1..T -> report

Each step is ``pending``, ``running`` or ``done`` and keeps its outputs (paths) and metrics.
The manifest is rewritten atomically after every change, so a killed run leaves it readable;
running the same command again resumes at the first step that is not done and never redoes a
finished one. Asking for more rounds than a run has keeps its finished rounds and adds the new
ones (the report is redone): ``recipe.rounds`` is left out of the hash, since a round computes
the same whatever number follows it. A run directory is tied to its config by a hash of the
settings that change results; resuming it with different ones is refused, naming them
(:func:`changed_settings`, against the ``config.yaml`` the run left).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PENDING, RUNNING, DONE = "pending", "running", "done"
MANIFEST_FILE = "manifest.json"
# The resolved config a run writes beside its manifest once the manifest accepts it.
CONFIG_FILE = "config.yaml"
# Settings that change where or how fast a run goes, or how far, not what it computes.
_NOT_HASHED = {
    ("run", "output_dir"),
    ("cluster", "address"),
    ("cluster", "num_cpus"),
    ("recipe", "rounds"),
}


class ManifestError(RuntimeError):
    pass


class PlanChanged(ManifestError):
    """The run directory's steps are not a prefix of the plan asked for (fewer rounds, or
    another recipe's steps)."""


class ConfigChanged(ManifestError):
    """The run directory holds a run of another config (its hash ``recorded``, now ``now``);
    ``detail`` says what differs, where that is known."""

    def __init__(self, run_dir: Path, recorded: str, now: str, detail: str | None = None):
        self.run_dir, self.recorded, self.now = run_dir, recorded, now
        super().__init__(
            f"{run_dir} holds a run with another config ({detail or f'hash {recorded}, now {now}'}"
            "); pick a new run.name or delete that directory"
        )


def plan_steps(rounds: int, round_steps: Sequence[str], meta: bool = True) -> list[str]:
    """Every step of a run with ``rounds`` rounds of ``round_steps``, in order."""
    steps = ["meta.label", "meta.train"] if meta else []
    steps.append("round0.eval")
    for index in range(1, rounds + 1):
        steps += [f"round{index}.{name}" for name in round_steps]
    return [*steps, "report"]


def config_hash(resolved: dict[str, Any]) -> str:
    """A stable hash of the resolved config, leaving out settings that do not change results."""
    trimmed = {
        section: {k: v for k, v in values.items() if (section, k) not in _NOT_HASHED}
        if isinstance(values, dict)
        else values
        for section, values in resolved.items()
    }
    text = json.dumps(trimmed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed_settings(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``section.key: old -> new`` for each hashed setting that differs between two resolved
    configs, in key order."""
    old, new = _flatten(before), _flatten(after)
    return [
        f"{'.'.join(key)}: {_shown(old, key)} -> {_shown(new, key)}"
        for key in sorted(set(old) | set(new))
        if key[:2] not in _NOT_HASHED and old.get(key, _UNSET) != new.get(key, _UNSET)
    ]


_UNSET = object()


def _shown(flat: dict[tuple[str, ...], Any], key: tuple[str, ...]) -> str:
    return repr(flat[key]) if key in flat else "(unset)"


def _flatten(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, (*prefix, str(key))))
    return flat


def run_config_hash(config: Any) -> str:
    """The hash a run directory's manifest holds for a ``SelfEvoConfig``."""
    return config_hash(_resolved(config))


def open_run(config: Any, run_dir: str | Path, recipe: Any) -> Manifest:
    """The manifest of ``config``'s run of ``recipe`` (a :class:`selfevo.recipes.Recipe`) in
    ``run_dir``, started there when new. A directory holding another config's run is refused
    with the settings that changed, read against the ``config.yaml`` that run left."""
    try:
        return Manifest.open(
            run_dir,
            run_config_hash(config),
            config.recipe.rounds,
            recipe.round_steps,
            meta=recipe.has_meta(config),
        )
    except ConfigChanged as refused:
        detail = _changes_from_saved(Path(run_dir), config, refused)
        raise ConfigChanged(refused.run_dir, refused.recorded, refused.now, detail) from None


def _resolved(config: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)


def _changes_from_saved(run_dir: Path, config: Any, refused: ConfigChanged) -> str | None:
    """What differs from the config the run saved, on one line (an ablation reports an arm's
    failure by its last line); None when the saved config cannot be read."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    changes = changed_settings(saved, _resolved(config))
    if not changes:
        return (
            f"no setting differs from its {CONFIG_FILE}: an older selfevo hashed it another way "
            f"(hash {refused.recorded}, now {refused.now})"
        )
    more = f"; and {len(changes) - 8} more" if len(changes) > 8 else ""
    return "changed: " + "; ".join(changes[:8]) + more


@dataclass
class Step:
    name: str
    status: str = PENDING
    started: float | None = None
    seconds: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    path: Path
    config_hash: str
    steps: list[Step]

    @classmethod
    def open(
        cls,
        run_dir: str | Path,
        config_hash: str,
        rounds: int,
        round_steps: Sequence[str],
        meta: bool = True,
    ) -> Manifest:
        """Load the run's manifest, or start one. Raises ManifestError on a config mismatch."""
        path = Path(run_dir) / MANIFEST_FILE
        plan = plan_steps(rounds, round_steps, meta)
        if not path.exists():
            manifest = cls(path, config_hash, [Step(name) for name in plan])
            manifest.save()
            return manifest
        data = json.loads(path.read_text())
        if data["config_hash"] != config_hash:
            raise ConfigChanged(path.parent, data["config_hash"], config_hash)
        recorded = [Step(**s) for s in data["steps"] if s["name"] != "report"]
        report = next((Step(**s) for s in data["steps"] if s["name"] == "report"), Step("report"))
        planned = plan[:-1]
        if [s.name for s in recorded] != planned[: len(recorded)] or len(recorded) > len(planned):
            raise PlanChanged(
                f"{path}: its steps do not match a {rounds}-round plan (a run can gain rounds, "
                "not lose them)"
            )
        if len(recorded) < len(planned):  # more rounds asked for: the report is redone after
            report = Step("report")
        steps = recorded + [Step(name) for name in planned[len(recorded) :]] + [report]
        return cls(path, config_hash, steps)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        data = {"config_hash": self.config_hash, "steps": [asdict(s) for s in self.steps]}
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"no step {name!r} in this run's plan")

    def is_done(self, name: str) -> bool:
        return self.step(name).status == DONE

    def next_step(self) -> str | None:
        """The first step that is not done (a step left ``running`` by a killed run is redone)."""
        return next((s.name for s in self.steps if s.status != DONE), None)

    def start(self, name: str) -> None:
        if name != self.next_step():
            raise ManifestError(f"cannot start {name!r}: the next step is {self.next_step()!r}")
        step = self.step(name)
        step.status, step.started = RUNNING, time.time()
        self.save()

    def finish(
        self,
        name: str,
        outputs: dict[str, str] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        step = self.step(name)
        if step.status != RUNNING:
            raise ManifestError(f"cannot finish {name!r}: it is {step.status}")
        step.status = DONE
        step.seconds = time.time() - (step.started or time.time())
        step.outputs, step.metrics = dict(outputs or {}), dict(metrics or {})
        self.save()

    def complete(self) -> bool:
        return self.next_step() is None

    def comparable(self) -> list[dict[str, Any]]:
        """The steps without timings: what two runs of the same config must agree on."""
        return [
            {"name": s.name, "status": s.status, "outputs": s.outputs, "metrics": s.metrics}
            for s in self.steps
        ]
