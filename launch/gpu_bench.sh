#!/usr/bin/env bash
# Run `selfevo bench gpu` once on a bare GPU machine: CUDA PyTorch, transformers, peft and
# accelerate installed, no Ray, no vLLM, no network. The wheels `launch/gpu_wheels.sh`
# gathered (DeepSpeed and selfevo's few other needs) are installed into a scratch folder, the
# bench runs from this checkout, and its JSON report is written to $OUT/bench_gpu.json (OUT
# defaults to .), its summary to bench_gpu.txt and the GPU's name to gpu.txt.
#
#   launch/gpu_bench.sh [WHEEL_DIR] [selfevo bench gpu options...]
#   e.g. OUT=/tmp/out launch/gpu_bench.sh .whl --peak-tflops 989      # an H200's dense bf16
set -euo pipefail
dir=${1:-.whl}
shift || true
out=${OUT:-.}
site=${SITE_DIR:-/tmp/selfevo-site}
python=${PYTHON:-python3}

if compgen -G "$dir/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$dir"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1 || true
"$python" -m selfevo.cli bench gpu --out "$out/bench_gpu.json" "$@" | tee "$out/bench_gpu.txt"
