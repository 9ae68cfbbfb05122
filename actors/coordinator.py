"""The coordinator actor: owns a run (its manifest, its engine pool and the current weights)
and hands the weights of each round to the next.

:func:`run_recipe` starts it and relays its progress lines; the actor runs a
:class:`~actors.controller.RunController` in one thread while the driver polls ``drain_log``
from another. It is a zero-CPU threaded actor: the engines and the trainer hold the devices.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from pathlib import Path
from typing import Any

import ray

from actors.controller import RunController
from selfevo.config import LabelerKind, SelfEvoConfig


@ray.remote(num_cpus=0, max_concurrency=4)
class Coordinator:
    """The run's owner, as a Ray actor (see :class:`RunController` for what it does)."""

    def __init__(self, config: SelfEvoConfig, run_dir: str):
        self.controller = RunController(config, run_dir)

    def run(self) -> dict[str, Any]:
        try:
            return self.controller.run()
        except Exception:
            self.controller.emit(traceback.format_exc())
            raise

    def drain_log(self) -> list[str]:
        return self.controller.drain()


def _labeler_env(config: SelfEvoConfig) -> dict[str, Any] | None:
    """The labeler's API key, handed from the driver's environment to the coordinator's.

    It travels only in the actor's runtime environment: never in the config, the manifest,
    the run directory or the log. A driver without the variable hands nothing (a cluster may
    set it on its nodes instead).
    """
    labeler = config.recipe.labeler
    key = os.environ.get(labeler.api_key_env) if labeler.kind is LabelerKind.openai else None
    return {"env_vars": {labeler.api_key_env: key}} if key else None


COORDINATOR_PREFIX = "selfevo-coordinator:"


def coordinator_name(run_dir: str | Path) -> str:
    """The coordinator of a live run is a named actor: an operator (or a test) can find it,
    and a second ``selfevo run`` on the same run directory is refused."""
    return f"{COORDINATOR_PREFIX}{Path(run_dir).resolve()}"


def run_recipe(config: SelfEvoConfig, emit=print, poll_s: float = 1.0) -> dict[str, Any]:
    """Run (or resume) ``config``'s recipe under a coordinator actor; returns the summary."""
    run_dir = str(Path(config.run.output_dir).resolve() / config.run.name)
    name = coordinator_name(run_dir)
    with contextlib.suppress(ValueError):  # ValueError: no live coordinator of that name
        ray.get_actor(name)
        raise RuntimeError(f"{run_dir} is being run by another live coordinator ({name})")
    coordinator = Coordinator.options(name=name, runtime_env=_labeler_env(config)).remote(
        config, run_dir
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
