"""What a wheel holds: every package of the project and the demo world's seed checkpoint
(the Docker image and `pip install .` get this, not the editable checkout)."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest
import tomllib
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_of_the_project_is_in_the_wheel():
    found = set(
        find_packages(where=str(ROOT), include=_setuptools()["packages"]["find"]["include"])
    )
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("selfevo", "actors", "launch")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert {"selfevo.recipes", "selfevo.demo_world", "selfevo.cli"} <= on_disk
    assert on_disk <= found, on_disk - found


@pytest.mark.parametrize("world", ["demo_world", "division_world"])
def test_each_seed_checkpoint_is_package_data(world):
    patterns = _setuptools()["package-data"][f"selfevo.{world}"]
    folder = ROOT / "selfevo" / world
    files = [p.relative_to(folder).as_posix() for p in (folder / "seed_checkpoint").iterdir()]
    assert "seed_checkpoint/model.safetensors" in files
    assert all(any(fnmatch(f, pattern) for pattern in patterns) for f in files)
