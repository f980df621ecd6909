"""Prometheus metrics of the operator.

Counters and histograms are module-level (created once, at import, never in a
constructor); gauges that describe the fleet are computed at scrape time by a
collector reading the operator's in-memory indexes, so nothing has to be kept
in sync event by event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "edgeai_operator_reconciles_total", "Reconciles by kind and outcome (success, error, requeue)",
    ["kind", "outcome"], registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "edgeai_operator_reconcile_duration_seconds", "Reconcile latency by kind", ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
VERIFICATIONS = Counter(
    "edgeai_operator_model_verifications_total", "Model artifact checks by outcome reason",
    ["reason"], registry=REGISTRY,
)
DIGEST_MISMATCHES = Counter(
    "edgeai_operator_digest_mismatches_total", "Artifacts whose sha256 differed from the spec",
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "edgeai_operator_api_requests_total", "Kubernetes API requests made (watches excluded)",
    ["verb", "resource", "code"], registry=REGISTRY,
)
API_LATENCY = Histogram(
    "edgeai_operator_api_request_duration_seconds", "Kubernetes API request latency", ["verb"],
    registry=REGISTRY,
)
WATCH_EVENTS = Counter(
    "edgeai_operator_watch_events_total", "Watch events handled by kind", ["kind"], registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "edgeai_operator_workqueue_depth", "Keys waiting in a work queue", ["queue"], registry=REGISTRY,
)
QUEUE_RETRIES = Counter(
    "edgeai_operator_workqueue_retries_total", "Keys requeued with backoff after an error", ["queue"],
    registry=REGISTRY,
)
ROLLOUT_EVENTS = Counter(
    "edgeai_operator_rollout_events_total",
    "Rollout transitions by reason: RolloutComplete, RolloutFailed (a health gate failed), RolledBack",
    ["reason"], registry=REGISTRY,
)
LEADER = Gauge("edgeai_operator_leader", "1 while this replica holds the leader lease", registry=REGISTRY)
PLAN_MEMO = Counter(
    "edgeai_operator_plan_memo_total", "Per-device derivations of deployment plans reused (hit) or made (miss)",
    ["result"], registry=REGISTRY,
)
WRITES_SKIPPED = Counter(
    "edgeai_operator_writes_skipped_total", "Writes not made because nothing would change", ["kind"],
    registry=REGISTRY,
)


class FleetCollector(Collector):
    """Fleet gauges computed from the operator's indexes at scrape time."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot()
        models = GaugeMetricFamily("edgeai_operator_models", "EdgeModels by verification state", labels=["state"])
        for state, n in sorted(snap.get("models", {}).items()):
            models.add_metric([state], n)
        yield models
        devices = GaugeMetricFamily("edgeai_operator_devices", "EdgeDevices by online state", labels=["online"])
        for state, n in sorted(snap.get("devices", {}).items()):
            devices.add_metric([state], n)
        yield devices
        placements = GaugeMetricFamily(
            "edgeai_operator_placements", "Devices placed, ready and unplaced over all InferenceDeployments",
            labels=["state"],
        )
        for state, n in sorted(snap.get("placements", {}).items()):
            placements.add_metric([state], n)
        yield placements


def register_fleet(snapshot: Callable[[], Mapping[str, Mapping[str, int]]]) -> FleetCollector:
    col = FleetCollector(snapshot)
    REGISTRY.register(col)
    return col
