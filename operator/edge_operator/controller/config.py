"""Operator settings, from the command line and EDGEAI_* environment variables."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_operator.core.runtime_images import RuntimeImages, RuntimeImagesError, from_env
from edge_operator.kube.verify import VerifySettings, settings_from_env
from edgeai_api import constants as c


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class OperatorConfig:
    # The runtime image of every model-server Pod, per onnxruntime provider family (core/runtime_images.py):
    # EDGEAI_RUNTIME_IMAGE (cpu), EDGEAI_RUNTIME_IMAGE_<FAMILY> (cuda, openvino, rocm, qnn, cann).
    images: RuntimeImages = field(default_factory=lambda: RuntimeImages(c.DEFAULT_RUNTIME_IMAGE))
    namespace: str = "default"  # where the leader Lease lives (the operator's own namespace)
    identity: str = field(default_factory=socket.gethostname)
    leader_election: bool = True
    lease_name: str = c.OPERATOR_NAME
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    workers: int = 64
    verify_workers: int = 2
    resync_seconds: float = 300.0
    fanout_delay: float = 0.5  # coalesce a burst of device/node changes into one reconcile per deployment
    # Coalesce the burst of workload and pod status events of a rollout into fewer status writes;
    # a spec change is never delayed.
    status_delay: float = 0.3
    # Progress-only status changes (a device's phase, counts) wait up to this long to be written
    # together; condition changes (Ready, Degraded...) are written at once.
    status_interval: float = 5.0
    # Budget for progress-only status writes across all objects (see status_writer.StatusWriter).
    progress_writes_per_second: float = 20.0
    # What a device serves is informational (the deployments' status is authoritative): coarser.
    device_status_interval: float = 30.0  # a rollout changes a device twice within seconds: fewer writes
    heartbeat_resolution: float = 300.0
    log_level: str = "info"
    verify: VerifySettings = field(default_factory=VerifySettings)


def parse(argv: Sequence[str] | None = None) -> OperatorConfig:
    ap = argparse.ArgumentParser(
        prog="edgeai-operator",
        description="Kubernetes operator placing verified ONNX inference on KubeEdge edge nodes.",
    )
    ap.add_argument("--namespace", default=os.environ.get("EDGEAI_NAMESPACE") or os.environ.get("POD_NAMESPACE")
                    or "default", help="namespace of the leader-election Lease (the operator's own)")
    ap.add_argument("--identity", default=os.environ.get("POD_NAME") or socket.gethostname(),
                    help="this replica's identity in the Lease")
    ap.add_argument("--no-leader-election", action="store_true",
                    default=os.environ.get("EDGEAI_LEADER_ELECTION", "1") in ("0", "false", "no"),
                    help="act at once without a Lease (one replica only)")
    ap.add_argument("--metrics-bind", default=os.environ.get("EDGEAI_METRICS_BIND", "0.0.0.0:8080"),
                    help="HOST:PORT for /metrics, /healthz and /readyz")
    ap.add_argument("--workers", type=int, default=_env_int("EDGEAI_WORKERS", 64),
                    help="concurrent InferenceDeployment reconciles (each mostly waits on the API server); "
                         "EdgeDevice status gets a quarter of this, Node discovery 2")
    ap.add_argument("--verify-workers", type=int, default=_env_int("EDGEAI_VERIFY_WORKERS", 2))
    ap.add_argument("--resync-seconds", type=float, default=_env_float("EDGEAI_RESYNC_SECONDS", 300.0))
    ap.add_argument("--heartbeat-resolution", type=float,
                    default=_env_float("EDGEAI_HEARTBEAT_RESOLUTION_SECONDS", 300.0),
                    help="write an unchanged device's lastHeartbeat at most this often (a fleet of "
                         "1,000 devices costs 1000/N status writes a second)")
    ap.add_argument("--log-level", default=os.environ.get("EDGEAI_LOG_LEVEL", "info"))
    a = ap.parse_args(argv)
    try:
        images = from_env(os.environ, c.DEFAULT_RUNTIME_IMAGE)
    except RuntimeImagesError as e:
        ap.error(str(e))
    host, _, port = a.metrics_bind.rpartition(":")
    return OperatorConfig(
        images=images,
        namespace=a.namespace,
        identity=a.identity,
        leader_election=not a.no_leader_election,
        metrics_host=host or "0.0.0.0",
        metrics_port=int(port),
        workers=a.workers,
        verify_workers=a.verify_workers,
        resync_seconds=a.resync_seconds,
        heartbeat_resolution=a.heartbeat_resolution,
        log_level=a.log_level,
        verify=settings_from_env(),
    )
