"""Prometheus metrics of the runtime.

Built once per server from a registry handed in (never inside the dataplane
constructor), so two servers in one process (tests, a cloud stand-in) do not
collide and the dataplane stays testable without Prometheus globals. Labelled
children are cached: `labels()` takes a lock and a dict lookup per call, which
shows up at tens of thousands of requests per second.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class DeviceCollector(Collector):
    """CPU, memory and (where the host exposes it) temperature of the device."""

    def __init__(self, proc: str = "/proc", sys_thermal: str = "/sys/class/thermal") -> None:
        self._proc = proc
        self._thermal = sys_thermal
        self._last_cpu: tuple[int, int] | None = None

    def _cpu_times(self) -> tuple[int, int] | None:
        try:
            with open(os.path.join(self._proc, "stat")) as f:
                parts = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
        return sum(parts), idle

    def _meminfo(self) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            with open(os.path.join(self._proc, "meminfo")) as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    fields = rest.split()
                    if fields:
                        out[key] = int(fields[0]) * 1024
        except (OSError, ValueError):
            pass
        return out

    def collect(self) -> Iterator[Any]:
        cpu = GaugeMetricFamily("edgeai_device_cpu_utilization", "Share of CPU time busy since the last scrape (0..1)")
        now = self._cpu_times()
        if now is not None and self._last_cpu is not None:
            total, idle = now[0] - self._last_cpu[0], now[1] - self._last_cpu[1]
            if total > 0:
                cpu.add_metric([], 1.0 - idle / total)
        self._last_cpu = now
        yield cpu
        yield GaugeMetricFamily("edgeai_device_cpu_count", "CPUs available to the runtime", value=os.cpu_count() or 0)
        mem = self._meminfo()
        if "MemTotal" in mem:
            yield GaugeMetricFamily("edgeai_device_memory_total_bytes", "Device memory", value=mem["MemTotal"])
        if "MemAvailable" in mem:
            yield GaugeMetricFamily(
                "edgeai_device_memory_available_bytes", "Device memory available", value=mem["MemAvailable"]
            )
        temp = GaugeMetricFamily(
            "edgeai_device_temperature_celsius", "Thermal zone temperature, where the host exposes it", labels=["zone"]
        )
        for path in sorted(glob.glob(os.path.join(self._thermal, "thermal_zone*"))):
            try:
                with open(os.path.join(path, "temp")) as f:
                    milli = int(f.read().strip())
                with open(os.path.join(path, "type")) as f:
                    zone = f.read().strip()
            except (OSError, ValueError):
                continue
            temp.add_metric([zone], milli / 1000.0)
        yield temp
        try:
            load1, _, _ = os.getloadavg()
            yield GaugeMetricFamily("edgeai_device_load1", "1-minute load average", value=load1)
        except OSError:
            pass


class _LiveCollector(Collector):
    def __init__(self, metrics: RuntimeMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("edgeai_queue_depth", "Requests waiting for or in a model run", labels=["model"])
        if self._m._queue_source is not None:
            for model, n in sorted(self._m._queue_source().items()):
                depth.add_metric([model], n)
        yield depth
        if self._m._ready_source is not None:
            yield GaugeMetricFamily(
                "edgeai_ready", "1 when the runtime judges itself ready", value=1 if self._m._ready_source() else 0
            )


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        r.register(DeviceCollector())
        self.requests = Counter(
            "edgeai_requests",
            "Inference requests by model, version, outcome and protocol (rest, grpc)",
            ["model", "version", "outcome", "protocol"],
            registry=r,
        )
        self.latency = Histogram(
            "edgeai_request_duration_seconds",
            "Inference request latency (server side, from the request's arrival to its answer)",
            ["model", "version", "outcome", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "edgeai_batch_size",
            "Rows per model run (1 when batching is off)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "edgeai_fallbacks", "Low-confidence results and what happened to them", ["model", "outcome"], registry=r
        )
        self.breaker_state = Gauge(
            "edgeai_fallback_breaker_state", "Cloud breaker: 0 closed, 1 half-open, 2 open", registry=r
        )
        self.hard_queue_depth = Gauge(
            "edgeai_hard_examples_queued", "Hard examples waiting on disk for the cloud", registry=r
        )
        self.hard_dropped = Counter(
            "edgeai_hard_examples_dropped",
            "Hard examples dropped: queue full (oldest dropped) or refused by the cloud for good",
            ["reason"],
            registry=r,
        )
        self.hard_drained = Counter(
            "edgeai_hard_examples_drained", "Hard examples delivered to the cloud from the queue", registry=r
        )
        self.loads = Counter("edgeai_model_loads", "Model loads by outcome", ["model", "outcome"], registry=r)
        self.load_seconds = Histogram(
            "edgeai_model_load_seconds",
            "Verify + load + warm-up time",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.verifications = Counter(
            "edgeai_verifications",
            "Artifact verifications by outcome (ok or the failure reason)",
            ["outcome"],
            registry=r,
        )
        self.model_info = Gauge(
            "edgeai_model_info",
            "Loaded model versions (1 = serving, 0 = kept for rollback)",
            ["model", "version", "sha256"],
            registry=r,
        )
        # Queue depth and readiness are read at scrape time (see `live`), so they are
        # right on every scrape, also when /metrics is served on its own port.
        self._queue_source: Callable[[], dict[str, int]] | None = None
        self._ready_source: Callable[[], bool] | None = None
        r.register(_LiveCollector(self))
        self.connections_refused = Counter(
            "edgeai_connections_refused",
            "Connections closed by the runtime's limits before a request: max_connections, header_timeout, "
            "header_too_large",
            ["reason"],
            registry=r,
        )
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._batch_children: dict[str, Any] = {}
        self.started = time.time()

    def live(self, queue_depths: Callable[[], dict[str, int]], ready: Callable[[], bool]) -> None:
        self._queue_source = queue_depths
        self._ready_source = ready

    def observe_request(self, model: str, version: str, outcome: str, seconds: float, protocol: str = "rest") -> None:
        key = (model, version, outcome, protocol)
        pair = self._children.get(key)
        if pair is None:
            pair = (self.requests.labels(*key), self.latency.labels(*key))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_batch(self, model: str, rows: int) -> None:
        child = self._batch_children.get(model)
        if child is None:
            child = self._batch_children[model] = self.batch_size.labels(model)
        child.observe(rows)
