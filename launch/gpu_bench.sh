#!/usr/bin/env bash
# Run `selfevo bench gpu` once on a bare GPU machine: CUDA PyTorch, transformers, peft and
# accelerate installed, no Ray, no vLLM, no network. The wheels `launch/gpu_wheels.sh`
# gathered (DeepSpeed and selfevo's few other needs) are installed into a scratch folder, the
# bench runs from this checkout, and its JSON report is written to $OUT/bench_gpu.json (OUT
# defaults to .), its summary to bench_gpu.txt and the GPU's name to gpu.txt.
#
#   launch/gpu_bench.sh [WHEEL_DIR] [selfevo bench gpu options...]     # WHEEL_DIR: .whl
#   e.g. OUT=/tmp/out launch/gpu_bench.sh .whl --peak-tflops 989      # an H200's dense bf16
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=.whl
if [[ $# -gt 0 && $1 != -* ]]; then
    dir=$1
    shift
fi
out=$(mkdir -p "${OUT:-.}" && cd "${OUT:-.}" && pwd)
site=${SITE_DIR:-/tmp/selfevo-site}
python=${PYTHON:-python3}
"$python" --version

if compgen -G "$dir/*.whl" >/dev/null; then
    # By name from the folder: a wheel built for another Python is refused with its name.
    "$python" -m pip install -q --no-index --find-links "$dir" --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$site" deepspeed hjson pydantic pydantic-core \
        annotated-types typing-inspection typing-extensions omegaconf
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1 || true
cd "$root"
"$python" -m selfevo.cli bench gpu --out "$out/bench_gpu.json" "$@" | tee "$out/bench_gpu.txt"
