"""The pure core stays light: importing every selfevo module loads no heavy framework."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import selfevo

HEAVY = ("ray", "vllm", "deepspeed", "torch", "transformers")


def test_selfevo_imports_no_heavy_stack():
    modules = ["selfevo"] + [f"selfevo.{m.name}" for m in pkgutil.walk_packages(selfevo.__path__)]
    assert len(modules) > 5
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
