"""``selfevo ablate``: SELF's ablation arms (:mod:`selfevo.ablation`) run one after another
on the local Ray, each a run directory of its own under ``<run.output_dir>/<run.name>-ablation``,
then ``ablation.json``, ``ablation.md`` and ``ablation.png`` beside them.

Running it again resumes: finished arms are read back, an unfinished one resumes at its
first unfinished step. An arm that shares the ``self`` arm's meta-skill phase gets a copy of
its ``meta/`` and ``round0/`` directories and those steps marked done in its manifest
(with ``shared_from`` in their metrics), so its own run starts at round 1.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.controller import run_config_hash
from actors.coordinator import run_recipe
from selfevo import ablation
from selfevo.config import SelfEvoConfig, load_config
from selfevo.manifest import MANIFEST_FILE, Manifest
from selfevo.recipes import recipe_named

SHARED_STEPS = ("meta.label", "meta.train", "round0.eval")


def _share_meta(source: Path, run_dir: Path, config: SelfEvoConfig) -> None:
    """Start ``run_dir`` from ``source``'s meta-skill phase and round-0 evaluation."""
    if (run_dir / MANIFEST_FILE).exists():
        return  # resuming: shared before
    for folder in ("meta", "round0"):
        shutil.copytree(source / folder, run_dir / folder, dirs_exist_ok=True)
    done = {s["name"]: s for s in json.loads((source / MANIFEST_FILE).read_text())["steps"]}
    recipe = recipe_named(config.recipe.name.value)
    manifest = Manifest.open(
        run_dir, run_config_hash(config), config.recipe.rounds, recipe.round_steps
    )
    for name in SHARED_STEPS:
        manifest.start(name)
        metrics = {**done[name]["metrics"], "shared_from": str(source)}
        manifest.finish(name, done[name]["outputs"], metrics)


def run_ablation(
    configs: list[str] | str | None,
    overrides: list[str],
    rounds: int = 3,
    emit: Callable[[str], None] = print,
    arm_names: list[str] | None = None,
) -> dict[str, Any]:
    """Run the ablation's arms (every one, or ``arm_names``), resuming finished ones, and
    write its outputs; returns the ``ablation.json`` content."""
    base = load_config(configs, overrides)
    if base.recipe.name.value != "self":
        raise ValueError(
            f"selfevo ablate runs SELF's ablations; the config's recipe is {base.recipe.name.value}"
        )
    out = Path(base.run.output_dir).resolve() / f"{base.run.name}-ablation"
    started, results = time.perf_counter(), {}
    for arm in ablation.arms(rounds, arm_names):
        arm_overrides = [
            *overrides, *arm.overrides, f"recipe.rounds={arm.rounds}",
            f"run.output_dir={out}", f"run.name={arm.name}",
        ]  # fmt: skip
        config = load_config(configs, arm_overrides)
        if arm.shares_meta:
            _share_meta(out / "self", out / arm.name, config)
        emit(f"[ablate] arm {arm.name}: {arm.what} ({arm.rounds} round(s))")
        results[arm.name] = {
            "what": arm.what,
            "overrides": list(arm.overrides),
            "rounds": arm.rounds,
            "shares_meta": arm.shares_meta,
            **_run_arm(config, arm.name, emit),
        }
    return _write(out, results, time.perf_counter() - started)


def _run_arm(config: SelfEvoConfig, name: str, emit: Callable[[str], None]) -> dict[str, Any]:
    """``{"summary": ...}``, or ``{"summary": None, "error": ...}`` for an arm that failed:
    the other arms still run, and its comparisons read "not measured"."""
    try:
        return {"summary": run_recipe(config, emit=lambda line: emit(f"[{name}] {line}"))}
    except Exception as exc:  # one arm's failure must not lose an hour of the others
        error = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        emit(f"[ablate] arm {name} failed: {error} (rerun to resume it)")
        return {"summary": None, "error": error}


def _write(out: Path, results: dict[str, Any], seconds: float) -> dict[str, Any]:
    rows = ablation.comparisons({name: arm["summary"] for name, arm in results.items()})
    report = {"output_dir": str(out), "wall_seconds": round(seconds, 1), "arms": results,
              "comparisons": rows}  # fmt: skip
    (out / "ablation.json").write_text(json.dumps(report, indent=2))
    (out / "ablation.md").write_text(
        f"# SELF ablation\n\nArms run from `{out}` in {seconds:.0f}s.\n\n"
        + ablation.markdown(rows) + "\n\n![ablation](ablation.png)\n"
    )  # fmt: skip
    ablation.plot(rows, out / "ablation.png")
    return report
