#!/usr/bin/env bash
# Gather, on a machine with the package index, the wheels `launch/gpu_bench.sh` installs on a
# bare GPU machine: DeepSpeed (built from its sdist, pure Python) and what it and selfevo's
# config need beyond a CUDA PyTorch image (torch, transformers, peft, accelerate, numpy,
# msgpack, einops, psutil, py-cpuinfo, ninja, pyyaml are assumed there). Run it from the
# repository root with the project's virtual environment active; the versions are the ones
# installed here.
#
#   launch/gpu_wheels.sh [WHEEL_DIR] [PYTHON_VERSION]      # defaults: .whl 3.12
set -euo pipefail
dir=${1:-.whl}
python_version=${2:-3.12}
mkdir -p "$dir"
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }

# DeepSpeed's index entry is an sdist; with its ops left to build at run time it makes a
# py3-none-any wheel (its setup imports torch: no build isolation).
DS_BUILD_OPS=0 python -m pip wheel -q --no-deps --no-build-isolation \
    "deepspeed==$(version deepspeed)" -w "$dir"

platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
# pydantic needs a newer typing-extensions than some images have.
for package in hjson pydantic pydantic-core annotated-types typing-inspection \
    typing-extensions omegaconf; do
    python -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
        --implementation cp "${platforms[@]}" -d "$dir" "$package==$(version "$package")"
done
ls -l "$dir"
du -sh "$dir"
