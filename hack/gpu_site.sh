#!/usr/bin/env bash
# The Python packages hack/gpu_check.sh needs on a GPU machine that cannot reach PyPI (its
# EDGEAI_GPU_SITE): onnxruntime-gpu and the runtime dependencies an image with PyTorch, numpy, onnx,
# grpcio, aiohttp and prometheus-client lacks, for that machine's Python, installed with
# `pip --target` here, packed as one tar.xz and split into pieces of at most PIECE bytes (a transfer
# limit per call). On the GPU machine:
#   cat p0 p1 ... | python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('/tmp/site')"
#   EDGEAI_GPU_SITE=/tmp/site hack/gpu_check.sh "$OUT"
#
#   hack/gpu_site.sh OUT_DIR [PIECE_BYTES (52200000)] [PYTHON_VERSION (3.12)]
set -euo pipefail
out=${1:?usage: hack/gpu_site.sh OUT_DIR [PIECE_BYTES] [PYTHON_VERSION]}
piece=${2:-52200000}
pyver=${3:-3.12}
pip=${PIP:-$(dirname "$0")/../.venv/bin/pip}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$pip" install -q --no-deps --target "$work/site" --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_34_x86_64 --only-binary=:all: \
    onnxruntime-gpu httptools orjson cryptography cffi pycparser onnxconverter-common
mkdir -p "$out"
rm -f "$out"/p[0-9]*
tar -C "$work/site" -cf - . | xz -9 -T0 | split -b "$piece" -d -a 1 - "$out/p"
ls -l "$out"
cat "$out"/p[0-9]* | sha256sum
