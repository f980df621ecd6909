# syntax=docker/dockerfile:1.7
# The edge runtime: fetches and verifies a model, then serves it over the Open
# Inference Protocol (KServe v2). Edge devices are often ARM, so build both:
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -f docker/edge-runtime.Dockerfile -t ghcr.io/edgeai/edge-runtime:0.1.0 .
#
# (onnxruntime publishes Linux wheels for amd64 and arm64; 32-bit arm has none.)
#
# One image per onnxruntime provider family: the wheels below all install the same
# `onnxruntime` package and exclude each other, so ONNXRUNTIME picks the one this
# image carries (the operator's runtime.images.<family>; the version range is
# pyproject's). The default is the cpu family.
#
#   family    ONNXRUNTIME                     providers            platforms
#   cpu       onnxruntime                     CPU                  amd64, arm64
#   cuda      onnxruntime-gpu[cuda,cudnn]     CUDA, TensorRT, CPU  amd64 (CUDA 13 and cuDNN 9
#                                                                  from pip, preloaded by the
#                                                                  runtime; the node's driver
#                                                                  via the NVIDIA container
#                                                                  toolkit; TensorRT needs its
#                                                                  own libraries: without them
#                                                                  TensorRT falls back to CUDA)
#   openvino  onnxruntime-openvino            OpenVINO, CPU        amd64 (OpenVINO bundled)
#   rocm      onnxruntime-rocm                ROCm, MIGraphX, CPU  amd64
#   qnn       onnxruntime-qnn                 QNN, CPU             arm64 (Windows on Arm first)
#   cann      onnxruntime-cann                CANN, CPU            amd64, arm64 (+ the CANN toolkit)
#
#   docker buildx build --platform linux/amd64 --build-arg ONNXRUNTIME=onnxruntime-openvino \
#     -f docker/edge-runtime.Dockerfile -t ghcr.io/edgeai/edge-runtime-openvino:0.1.0 .
# Runs as a fixed non-root UID and writes only to mounted volumes (the model cache,
# the fallback queue) and /tmp, so a read-only root filesystem works.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Pure-Python wheel: built once on the build platform, installed per target below.
FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY edge_runtime/ edge_runtime/
# The dependencies but onnxruntime (requirements.txt), and onnxruntime's version range
# (onnxruntime.txt): the final stage installs the family's wheel in its place.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -c "import re, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
ort = [d for d in deps if re.match(r'onnxruntime\b', d)]; assert len(ort) == 1, ort; \
open('/wheels/requirements.txt', 'w').write(''.join(d + chr(10) for d in deps if d not in ort)); \
open('/wheels/onnxruntime.txt', 'w').write(ort[0].removeprefix('onnxruntime'))"

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
# The provider family's onnxruntime distribution (with extras, no version): see the table above.
ARG ONNXRUNTIME=onnxruntime
LABEL org.opencontainers.image.title="edge-runtime" \
      io.edgeai.onnxruntime="${ONNXRUNTIME}" \
      org.opencontainers.image.description="Verified ONNX inference server for edge nodes (Open Inference Protocol)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# Another family's build leaves out the cpu one a base may already have (hack/images.py
# builds on a base with the dependencies preinstalled): the two would overwrite each
# other's files. The cpu image installs nothing more than before.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    if [ "${ONNXRUNTIME%%\[*}" != onnxruntime ]; then pip uninstall --yes --quiet onnxruntime; fi \
 && pip install --no-cache-dir -r /wheels/requirements.txt "${ONNXRUNTIME}$(cat /wheels/onnxruntime.txt)" \
 && pip install --no-cache-dir --no-deps /wheels/*.whl \
 && python -c "import onnxruntime, edge_runtime.cli; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
 && groupadd --system --gid 65532 edgeai \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin edgeai \
 && install -d -o 65532 -g 65532 /var/lib/edgeai/models /var/lib/edgeai/fallback-queue
USER 65532:65532
WORKDIR /tmp
# The content-addressed model cache and the fallback queue (edgeai_api.constants
# CACHE_DIR / FALLBACK_QUEUE_DIR): the operator mounts node-local volumes here; for a
# plain `docker run` on a device they must survive restarts too.
VOLUME ["/var/lib/edgeai"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["edge-runtime"]
CMD ["--help"]
