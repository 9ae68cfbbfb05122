"""The pure core stays light: importing every selfevo module (the recipes and the stage library
included) loads no heavy framework."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import selfevo

HEAVY = ("ray", "vllm", "deepspeed", "torch", "transformers")


def test_selfevo_imports_no_heavy_stack():
    found = pkgutil.walk_packages(selfevo.__path__, prefix="selfevo.")
    modules = ["selfevo"] + [m.name for m in found if not m.name.endswith("__main__")]
    assert {"selfevo.recipes.self_refine", "selfevo.stages", "selfevo.recipes.steps"} <= set(
        modules
    )
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
