# syntax=docker/dockerfile:1.7
# The edge runtime: fetches and verifies a model, then serves it over the Open
# Inference Protocol (KServe v2). Edge devices are often ARM, so build both:
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -f docker/edge-runtime.Dockerfile -t ghcr.io/edgeai/edge-runtime:0.1.0 .
#
# (onnxruntime publishes Linux wheels for amd64 and arm64; 32-bit arm has none.)
# Runs as a fixed non-root UID and writes only to mounted volumes (the model cache,
# the fallback queue) and /tmp, so a read-only root filesystem works.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Pure-Python wheel: built once on the build platform, installed per target below.
FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY edge_runtime/ edge_runtime/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="edge-runtime" \
      org.opencontainers.image.description="Verified ONNX inference server for edge nodes (Open Inference Protocol)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl \
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
