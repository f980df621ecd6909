#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one short run on a machine that has one and no network:
# the CUDA/TensorRT runtime tests, pack measured on every provider, and the runtime benchmark's
# accelerator rows. CI has no GPU: these are skipped there, with the reason.
#
# Needs an interpreter with the project's runtime dependencies and onnxruntime-gpu. Where pip can
# reach PyPI, `pip install -e '.[test]' && pip install onnxruntime-gpu[cuda,cudnn]` in a venv of its
# own is all. Where it cannot, EDGEAI_GPU_SITE names a folder holding onnxruntime-gpu and the
# missing dependencies (pip install --target), put before the interpreter's own packages; CUDA and
# cuDNN then come from the interpreter's nvidia-* wheels, linked beside onnxruntime so that the
# runtime's preload finds them where a pip install would put them.
#
#   hack/gpu_check.sh [OUT_DIR]     (python3 on PATH, or $PYTHON)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/edgeai-gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
site=${EDGEAI_GPU_SITE:-}
if [ -n "$site" ]; then
    nv=$("$py" -c 'import nvidia, os; print(os.path.realpath(list(nvidia.__path__)[0]))' 2>/dev/null || true)
    if [ -n "$nv" ] && [ ! -e "$site/nvidia" ]; then ln -s "$nv" "$site/nvidia"; fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/operator:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export EDGEAI_CACHE=${EDGEAI_CACHE:-/tmp/edgeai-cache}

{
    nvidia-smi -L
    "$py" -c 'import onnxruntime as o, sys; print(sys.version.split()[0], o.__version__, o.get_available_providers())'
} 2>&1 | tee "$out/env.txt"

rc=0
"$py" -m pytest -q -p no:cacheprovider -o addopts="-ra" --timeout 900 \
    tests/runtime/test_rt_gpu.py tests/unit/pack/test_pack_providers.py 2>&1 | tee "$out/tests.txt" || rc=1
"$py" -m benchmarks pack --runs 200 --out "$out/pack.md" 2>&1 | tee "$out/pack.txt" || rc=1
"$py" -m benchmarks runtime --models mobilenet --no-peers --no-grpc --only-providers --quick \
    --concurrency "${EDGEAI_GPU_CONCURRENCY:-1,32}" --out "$out/runtime.md" 2>&1 | tee "$out/runtime.txt" || rc=1
exit $rc
