"""``selfevo ablate``: a recipe's ablation arms (:mod:`selfevo.ablation`: SELF's, mistake
analysis's) run one after another on the local Ray, each a run directory of its own under
``<run.output_dir>/<run.name>-ablation``, then ``ablation.json``, ``ablation.md`` and
``ablation.png`` beside them.

Running it again resumes: finished arms are read back, an unfinished one resumes at its
first unfinished step. An arm that shares the main arm's meta-skill phase gets a copy of
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

from actors.coordinator import run_recipe
from selfevo import ablation
from selfevo.config import SelfEvoConfig, load_config
from selfevo.manifest import MANIFEST_FILE, open_run, run_config_hash
from selfevo.recipes import recipe_named

SHARED_STEPS = ("meta.label", "meta.train", "round0.eval")


def _share_meta(source: Path, run_dir: Path, config: SelfEvoConfig, main_hash: str) -> None:
    """Start ``run_dir`` from ``source``'s meta-skill phase and round-0 evaluation, which must
    be done, under the main arm's config (``main_hash``)."""
    recipe = recipe_named(config.recipe.name.value)
    has_meta = recipe.has_meta(config)
    manifest = open_run(config, run_dir, recipe)
    shared = SHARED_STEPS if has_meta else ("round0.eval",)  # no warm-up: round 0 alone
    if all(manifest.is_done(name) for name in shared):
        return  # resuming: shared before
    source_manifest = json.loads((source / MANIFEST_FILE).read_text())
    done = {s["name"]: s for s in source_manifest["steps"] if s["status"] == "done"}
    if source_manifest["config_hash"] != main_hash or not set(shared) <= set(done):
        raise RuntimeError(
            f"the main arm in {source} has not finished its meta-skill phase under this "
            f"config; rerun with the {source.name} arm"
        )
    for folder in ("meta", "round0") if has_meta else ("round0",):
        shutil.copytree(source / folder, run_dir / folder, dirs_exist_ok=True)
    for name in (step for step in shared if not manifest.is_done(step)):
        manifest.start(name)
        metrics = {**done[name]["metrics"], "shared_from": str(source)}
        manifest.finish(name, done[name]["outputs"], metrics)


def run_ablation(
    configs: list[str] | str | None,
    overrides: list[str],
    rounds: int | None = None,
    emit: Callable[[str], None] = print,
    arm_names: list[str] | None = None,
) -> dict[str, Any]:
    """Run the ablation's arms (every one, or ``arm_names``), resuming finished ones, and
    write its outputs; returns the ``ablation.json`` content. ``rounds`` of the main arm:
    SELF's three by default, the config's for the other recipes."""
    base = load_config(configs, overrides)
    recipe = base.recipe.name.value
    rounds = ablation.main_rounds(recipe, base.recipe.rounds, rounds)
    out = Path(base.run.output_dir).resolve() / f"{base.run.name}-ablation"
    started, results = time.perf_counter(), {}
    every = ablation.arms(rounds, arm_names, recipe)
    configs_of = {
        arm.name: load_config(configs, _arm_overrides(overrides, arm, out)) for arm in every
    }
    main = ablation.arms(rounds, recipe=recipe)[0]  # its meta-skill phase is shared
    main_hash = run_config_hash(load_config(configs, _arm_overrides(overrides, main, out)))
    for arm in every:
        emit(f"[ablate] arm {arm.name}: {arm.what} ({arm.rounds} round(s))")
        results[arm.name] = {
            "what": arm.what,
            "overrides": [*arm.defaults, *arm.overrides],
            "rounds": arm.rounds,
            "shares_meta": arm.shares_meta,
            **_run_arm(configs_of[arm.name], arm, out / main.name, main_hash, emit),
        }
    return _write(out, recipe, results, time.perf_counter() - started)


def _arm_overrides(overrides: list[str], arm: ablation.Arm, out: Path) -> list[str]:
    return [
        *arm.defaults, *overrides, *arm.overrides, f"recipe.rounds={arm.rounds}",
        f"run.output_dir={out}", f"run.name={arm.name}",
    ]  # fmt: skip


def _run_arm(
    config: SelfEvoConfig, arm: ablation.Arm, main_dir: Path, main_hash: str, emit: Callable
) -> dict[str, Any]:
    """``{"summary": ...}``, or ``{"summary": None, "error": ...}`` for an arm that failed:
    the other arms still run, and its comparisons read "not measured"."""
    try:
        if arm.shares_meta:
            _share_meta(main_dir, main_dir.parent / arm.name, config, main_hash)
        return {"summary": run_recipe(config, emit=lambda line: emit(f"[{arm.name}] {line}"))}
    except Exception as exc:  # one arm's failure must not lose an hour of the others
        error = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        emit(f"[ablate] arm {arm.name} failed: {error} (rerun with the same --rounds to resume)")
        return {"summary": None, "error": error}


def _write(out: Path, recipe: str, results: dict[str, Any], seconds: float) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rows = ablation.comparisons({name: arm["summary"] for name, arm in results.items()}, recipe)
    report = {"output_dir": str(out), "recipe": recipe, "wall_seconds": round(seconds, 1),
              "arms": results, "comparisons": rows}  # fmt: skip
    (out / "ablation.json").write_text(json.dumps(report, indent=2))
    (out / "ablation.md").write_text(
        f"# {recipe} ablation\n\nArms run from `{out}` in {seconds:.0f}s.\n\n"
        + ablation.markdown(rows) + "\n\n![ablation](ablation.png)\n"
    )  # fmt: skip
    ablation.plot(rows, out / "ablation.png")
    return report
