"""The run controller: walks the steps a recipe declares, records each in the manifest,
resumes a killed run at its first unfinished step, and relays progress lines.

It knows nothing about any recipe: :meth:`RunController.run` asks the recipe
(:mod:`selfevo.recipes`) for each step's handler and calls it with the run context
(:mod:`actors.context`). Each step reads what earlier steps wrote (paths in the manifest) and
writes its own outputs under the run directory; a step left ``running`` is redone.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from actors.context import RayRunContext
from selfevo.config import SelfEvoConfig, to_yaml
from selfevo.manifest import CONFIG_FILE, open_run
from selfevo.recipes import recipe_named


class RunController:
    """One run of ``config``'s recipe in ``run_dir``; :meth:`run` executes it, :meth:`drain`
    hands the progress lines written since the last call to another thread."""

    def __init__(self, config: SelfEvoConfig, run_dir: str):
        self.run_dir = Path(run_dir).resolve()
        self.recipe = recipe_named(config.recipe.name.value)
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = open_run(config, self.run_dir, self.recipe)
        # Written once the manifest accepts the config: a refused one leaves the record alone.
        (self.run_dir / CONFIG_FILE).write_text(to_yaml(config))
        self.context = RayRunContext(config, self.run_dir, self.recipe, self.manifest, self.emit)

    def emit(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)
        with (self.run_dir / "run.log").open("a") as log:
            log.write(line + "\n")

    def drain(self) -> list[str]:
        with self.lock:
            lines, self.lines = self.lines, []
        return lines

    def run(self) -> dict[str, Any]:
        """Every step not yet done, in order; returns the run's summary."""
        if self.manifest.complete():
            self.emit(f"{self.run_dir}: every step is done; nothing to run")
        try:
            while (name := self.manifest.next_step()) is not None:
                self._run_step(name)
        finally:
            self.context.shutdown()
        return json.loads((self.run_dir / "summary.json").read_text())

    def _run_step(self, name: str) -> None:
        handler, round_index = self.recipe.handler(name)
        self.emit(f"[{name}] started")
        self.manifest.start(name)
        started = time.perf_counter()
        outputs, metrics = handler(self.context, round_index)
        self.manifest.finish(name, outputs, metrics)
        self.emit(f"[{name}] done in {time.perf_counter() - started:.1f}s")
