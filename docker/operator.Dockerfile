# syntax=docker/dockerfile:1.7
# The edgeai operator (kopf). Multi-arch: nothing here depends on the CPU
# architecture, so one file builds every platform the base image has:
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -f docker/operator.Dockerfile -t ghcr.io/edgeai/edgeai-operator:0.1.0 .
#
# Runs as a fixed non-root UID (numeric, so runAsNonRoot can check it) and writes
# nothing outside /tmp, so a read-only root filesystem works.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The wheel is pure Python: build it once on the build machine's own platform,
# with no emulation, and install it into each target platform's image below.
FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY edge_runtime/ edge_runtime/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="edgeai-operator" \
      org.opencontainers.image.description="Kubernetes operator for verified ONNX inference on KubeEdge fleets" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# No .pyc written at run time (read-only root), unbuffered JSON logs, no pip cache.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# pip compiles the bytecode now, at build time, so imports stay fast without a writable root.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl \
 && groupadd --system --gid 65532 edgeai \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin edgeai
USER 65532:65532
WORKDIR /tmp
# One HTTP port: /metrics, /healthz (liveness), /readyz; the chart wires the probes.
EXPOSE 8080
# For plain `docker run`; Kubernetes uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["edgeai-operator"]
