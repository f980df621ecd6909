"""Prometheus metrics of the runtime.

Built once per server from a registry handed in (never inside the dataplane
constructor), so two servers in one process (tests, a cloud stand-in) do not
collide and the dataplane stays testable without Prometheus globals. Labelled
children are cached: `labels()` takes a lock and a dict lookup per call, which
shows up at tens of thousands of requests per second.
"""

from __future__ import annotations

import bisect
import glob
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from edge_runtime.core import quality, quality_gate

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
        if self._m._busy_poll_source is not None:
            yield CounterMetricFamily(
                "edgeai_busy_poll_seconds",
                "Wall time the event loop spent polling after answers instead of sleeping (serve --busy-poll-us), "
                "the requests it served meanwhile included: an upper bound of the CPU the polling took",
                value=self._m._busy_poll_source(),
            )


class RuntimeMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        process: bool = True,
        quality_metrics: QualityMetrics | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        r.register(DeviceCollector())
        # Per-request series are plain Python counters, turned into Prometheus families at scrape time:
        # prometheus_client's Counter.inc + Histogram.observe take locks and cost several microseconds,
        # which at tens of thousands of requests per second is a visible share of the server's work.
        self._requests = _Family(
            "edgeai_requests", "edgeai_request_duration_seconds",
            "Inference requests by model, version, outcome and protocol (rest, grpc)",
            "Inference request latency (server side, from the request's arrival to its answer)",
            ("model", "version", "outcome", "protocol"), LATENCY_BUCKETS,
        )
        self._batches = _Family(
            None, "edgeai_batch_size", "", "Rows per model run (1 when batching is off)", ("model",), BATCH_BUCKETS
        )
        r.register(_FamilyCollector((self._requests, self._batches)))
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
        self.execution_provider = Gauge(
            "edgeai_model_execution_provider",
            "The onnxruntime execution provider each loaded model version runs on (1 = serving, 0 = kept for "
            "rollback)",
            ["model", "version", "provider"],
            registry=r,
        )
        self.provider_fallbacks = Counter(
            "edgeai_execution_provider_fallbacks",
            "Execution providers passed over at a model load (not in this onnxruntime, failed to start); "
            "the reason is in the load's log line and the model's metadata",
            ["model", "provider"],
            registry=r,
        )
        # Queue depth and readiness are read at scrape time (see `live`), so they are
        # right on every scrape, also when /metrics is served on its own port.
        self._queue_source: Callable[[], dict[str, int]] | None = None
        self._ready_source: Callable[[], bool] | None = None
        self._busy_poll_source: Callable[[], float] | None = None
        r.register(_LiveCollector(self))
        self.connections_refused = Counter(
            "edgeai_connections_refused",
            "Connections closed by the runtime's limits: max_connections, header_timeout, header_too_large (before "
            "a request), body_timeout (a request's body late: 408)",
            ["reason"],
            registry=r,
        )
        self.quality = quality_metrics if quality_metrics is not None else QualityMetrics()
        if self.quality.enabled:
            r.register(self.quality)
        self.started = time.time()

    def live(self, queue_depths: Callable[[], dict[str, int]], ready: Callable[[], bool]) -> None:
        self._queue_source = queue_depths
        self._ready_source = ready

    def busy_poll(self, polled_seconds: Callable[[], float]) -> None:
        self._busy_poll_source = polled_seconds

    def observe_request(self, model: str, version: str, outcome: str, seconds: float, protocol: str = "rest") -> None:
        self._requests.observe((model, version, outcome, protocol), seconds)

    def observe_batch(self, model: str, rows: int) -> None:
        self._batches.observe((model,), rows)


class _Series:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self, n: int) -> None:
        self.buckets = [0] * n
        self.count = 0
        self.sum = 0.0


class _Family:
    """A counter (optional) and a histogram over the same labels, updated without locks.

    Updates happen on the event loop thread only; a scrape reads them from
    another thread at worst a few increments stale, never torn (CPython list
    and int updates are atomic under the GIL).
    """

    def __init__(
        self,
        counter: str | None,
        histogram: str,
        counter_help: str,
        histogram_help: str,
        labels: tuple[str, ...],
        buckets: tuple[float, ...],
    ) -> None:
        self.counter = counter
        self.histogram = histogram
        self.counter_help = counter_help
        self.histogram_help = histogram_help
        self.labels = labels
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[tuple[str, ...], _Series] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = _Series(len(self.bounds))
        s.count += 1
        s.sum += value
        i = bisect.bisect_left(self.bounds, value)
        if i < len(s.buckets):
            s.buckets[i] += 1

    def collect(self) -> Iterator[Any]:
        items = list(self.series.items())
        if self.counter is not None:
            c = CounterMetricFamily(self.counter, self.counter_help, labels=list(self.labels))
            for key, s in items:
                c.add_metric(list(key), s.count)
            yield c
        h = HistogramMetricFamily(self.histogram, self.histogram_help, labels=list(self.labels))
        for key, s in items:
            acc = 0
            cumulative = []
            for bound, n in zip(self.bounds, list(s.buckets), strict=True):
                acc += n
                cumulative.append((_fmt_bound(bound), acc))
            cumulative.append(("+Inf", s.count))
            h.add_metric(list(key), cumulative, s.sum)
        yield h


def _fmt_bound(b: float) -> str:
    return str(int(b)) + ".0" if b == int(b) else repr(b)


class _FamilyCollector(Collector):
    def __init__(self, families: tuple[_Family, ...]) -> None:
        self._families = families

    def collect(self) -> Iterator[Any]:
        for f in self._families:
            yield from f.collect()


# --- model quality (signals defined in core/quality.py) ----------------------------------------------

QUALITY_VERSIONS_PER_MODEL = 3  # current, previous (kept for rollback) and one being loaded
QUALITY_FLUSH_ROWS = 256
QUALITY_FLUSH_REQUESTS = 64


class _QualityEntry:
    """One model version's tracker, and the answers staged for it since the last flush.

    Requests only append references to their (already computed) arrays here;
    the numpy work runs once per `QUALITY_FLUSH_REQUESTS` requests (or
    `QUALITY_FLUSH_ROWS` rows, or a scrape) over the concatenated batch, so its
    fixed cost is shared. The staging list is bounded by those two limits.
    """

    def __init__(self, tracker: quality.Tracker, output_names: tuple[str, ...]) -> None:
        self.tracker = tracker
        self.lock = threading.Lock()
        self._in_names = tuple(n for n, _ in tracker.layout.inputs)
        index = {n: i for i, n in enumerate(output_names)}
        self._out = tuple((n, index[n]) for n, _ in tracker.layout.outputs if n in index)
        self._staged_in: list[list[np.ndarray]] = [[] for _ in self._in_names]
        self._staged_out: list[list[np.ndarray]] = [[] for _ in self._out]
        self._rows = 0
        self._requests = 0
        self._fallbacks: int | None = None

    def stage(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[np.ndarray], fallback: bool | None) -> None:
        with self.lock:
            rows = 0
            for k, name in enumerate(self._in_names):
                a = feeds.get(name)
                if a is not None:
                    self._staged_in[k].append(a)
                    rows = len(a)
            for k, (_, i) in enumerate(self._out):
                self._staged_out[k].append(outputs[i])
                rows = len(outputs[i])
            if fallback is not None:
                self._fallbacks = (self._fallbacks or 0) + fallback
            self._rows += rows
            self._requests += 1
            if self._rows >= QUALITY_FLUSH_ROWS or self._requests >= QUALITY_FLUSH_REQUESTS:
                self._flush()

    def record_cloud(self, agreed: int, compared: int) -> None:
        with self.lock:
            self.tracker.record_cloud(agreed, compared)

    def _flush(self) -> None:
        if not self._requests:
            return

        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        ins = {n: cat(p) for n, p in zip(self._in_names, self._staged_in, strict=True) if p}
        outs = {n: cat(p) for (n, _), p in zip(self._out, self._staged_out, strict=True) if p}
        for p in (*self._staged_in, *self._staged_out):
            p.clear()
        self.tracker.record_requests(self._requests, self._fallbacks)
        self._rows = self._requests = 0
        self._fallbacks = None
        self.tracker.observe(ins, outs)

    def snapshot(self) -> quality.Snapshot:
        with self.lock:
            self._flush()
            return self.tracker.snapshot()

    def window_profile(self, source: str) -> quality.Profile | None:
        """The window as a profile once it holds the rows PSI needs (fewer say too little to compare with)."""
        with self.lock:
            self._flush()
            if self.tracker.rows < self.tracker.min_rows:
                return None
            return self.tracker.window_profile(source)


class QualityMetrics(Collector):
    """Per model version: confidence and margin histograms, predicted classes, feature means and
    variances over the window, PSI against the reference profile, fallback and cloud-agreement ratios.

    Label cardinality is bounded: model x version (at most `QUALITY_VERSIONS_PER_MODEL` per model) x
    output or feature (at most `quality.MAX_FEATURES` per input) x class (top N + "other")."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        window_rows: int = quality.DEFAULT_WINDOW_ROWS,
        min_rows: int = quality.DEFAULT_MIN_ROWS,
        top_classes: int = quality.DEFAULT_TOP_CLASSES,
        breach: quality_gate.Thresholds | None = None,
    ) -> None:
        self.enabled = enabled
        # What edgeai_quality_breach compares the window with: the rollout's gate thresholds when the Pod
        # has a gate, else a PSI above the conventional "significant shift".
        self.breach = breach or quality_gate.Thresholds(max_psi=quality.PSI_ALERT)
        self.gate: tuple[str, quality_gate.Gate] | None = None  # (model, its Pod's gate), set by the dataplane
        self.window_rows = window_rows
        self.min_rows = min_rows
        self.top_classes = top_classes
        self.profiles: dict[str, quality.Profile] = {}
        # The previous revision's window on this device, per model: (its revision, the window as a profile).
        self.previous: dict[str, tuple[str, quality.Profile]] = {}
        # With --quality-window-dir: whether a previous window was loaded, per model, and the window writes.
        self.windows_kept = False
        self.window_writes: dict[str, int] = {}
        self.entries: dict[tuple[str, str], _QualityEntry] = {}
        self._lock = threading.Lock()

    def count_window_write(self, outcome: str) -> None:
        with self._lock:
            self.window_writes[outcome] = self.window_writes.get(outcome, 0) + 1

    def track(self, model: str, version: str, layout: quality.Layout, output_names: tuple[str, ...]) -> _QualityEntry:
        """The entry of a model version, made on its first answer (its profile is the model's, if any, and so
        is the previous revision's window, when it fits this version)."""
        def tracker_for(prev: tuple[str, quality.Profile] | None) -> quality.Tracker:
            return quality.Tracker(
                layout, self.profiles.get(model), window_rows=self.window_rows, min_rows=self.min_rows,
                top_classes=self.top_classes, previous=prev[1] if prev else None,
                previous_revision=prev[0] if prev else "",
            )

        prev = self.previous.get(model)
        try:
            tracker = tracker_for(prev)
        except quality.ProfileError:
            if prev is None:
                raise
            # A version loaded later with another layout: the previous window does not describe it.
            tracker = tracker_for(None)
        entry = _QualityEntry(tracker, output_names)
        with self._lock:
            entries = dict(self.entries)
            entries[model, version] = entry
            mine = [k for k in entries if k[0] == model]
            for k in mine[: max(0, len(mine) - QUALITY_VERSIONS_PER_MODEL)]:
                del entries[k]
            self.entries = entries  # replaced whole: a scrape iterates a dict nobody mutates
        return entry

    def collect(self) -> Iterator[Any]:
        conf = HistogramMetricFamily(
            "edgeai_quality_confidence", "Top-class probability of each answered row",
            labels=["model", "version", "output"],
        )
        margin = HistogramMetricFamily(
            "edgeai_quality_margin", "Top-1 minus top-2 class probability of each answered row",
            labels=["model", "version", "output"],
        )
        preds = CounterMetricFamily(
            "edgeai_quality_predictions", "Answered rows by predicted class (the top N classes, then other)",
            labels=["model", "version", "output", "class"],
        )
        rows = GaugeMetricFamily(
            "edgeai_quality_window_rows", "Rows in the rolling quality window", labels=["model", "version"]
        )
        fmean = GaugeMetricFamily(
            "edgeai_quality_feature_mean", "Mean of a tabular input feature over the window",
            labels=["model", "version", "feature"],
        )
        fvar = GaugeMetricFamily(
            "edgeai_quality_feature_variance", "Variance of a tabular input feature over the window",
            labels=["model", "version", "feature"],
        )
        psi = GaugeMetricFamily(
            "edgeai_quality_psi",
            "Population stability index of the window against the reference profile (0.1 watch, 0.25 alert)",
            labels=["model", "version", "signal", "name"],
        )
        psi_prev = GaugeMetricFamily(
            "edgeai_quality_psi_previous",
            "Population stability index of the window against the previous revision's window on this device "
            "(the rollout quality gate's maxPSIPrevious)",
            labels=["model", "version", "signal", "name"],
        )
        prev_loaded = GaugeMetricFamily(
            "edgeai_quality_previous_window",
            "1 when the previous revision's window on this device was loaded as a second reference, else 0",
            labels=["model"],
        )
        writes = CounterMetricFamily(
            "edgeai_quality_window_writes", "Writes of this revision's window to the node, by outcome (ok, error)",
            labels=["outcome"],
        )
        if self.windows_kept:
            for model in sorted(set(self.profiles) | set(self.previous)):
                prev_loaded.add_metric([model], 1 if model in self.previous else 0)
            for outcome in ("ok", "error"):
                writes.add_metric([outcome], self.window_writes.get(outcome, 0))
        fallback = GaugeMetricFamily(
            "edgeai_quality_fallback_ratio", "Share of the window's requests below the fallback threshold",
            labels=["model", "version"],
        )
        cloud = CounterMetricFamily(
            "edgeai_quality_cloud_comparisons", "Rows the cloud answered, by whether its top class matched the edge's",
            labels=["model", "version", "agreement"],
        )
        cloud_ratio = GaugeMetricFamily(
            "edgeai_quality_cloud_agreement_ratio", "Share of the window's cloud-answered rows whose top class "
            "matched the edge's", labels=["model", "version"],
        )
        breach = GaugeMetricFamily(
            "edgeai_quality_breach",
            "1 while the window crosses a quality threshold (check psi: maxPSI, psi_previous: maxPSIPrevious, "
            "check confidence: minMeanConfidence); outside a rollout's gate it never makes the runtime unready",
            labels=["model", "version", "check"],
        )
        gate = GaugeMetricFamily(
            "edgeai_quality_gate_state", "This Pod's rollout quality gate: 0 judging, 1 passed, 2 failed",
            labels=["model"],
        )
        if self.gate is not None:
            gate.add_metric([self.gate[0]], quality_gate.STATE_VALUES[self.gate[1].state])
        for (model, version), entry in list(self.entries.items()):
            s = entry.snapshot()
            mv = [model, version]
            rows.add_metric(mv, s.window_rows)
            for o in s.outputs:
                for fam, counts, total in ((conf, o.confidence, o.confidence_sum), (margin, o.margin, o.margin_sum)):
                    acc, buckets = 0, []
                    for bound, n in zip(o.bounds, counts, strict=False):
                        acc += n
                        buckets.append((_fmt_bound(bound), acc))
                    buckets.append(("+Inf", sum(counts)))
                    fam.add_metric([*mv, o.name], buckets, total)
                for label, n in o.classes.items():
                    preds.add_metric([*mv, o.name, label], n)
            for name, v in s.feature_mean.items():
                fmean.add_metric([*mv, name], v)
            for name, v in s.feature_variance.items():
                fvar.add_metric([*mv, name], v)
            for (signal, name), v in sorted(s.psi.items()):
                psi.add_metric([*mv, signal, name], v)
            for (signal, name), v in sorted(s.psi_previous.items()):
                psi_prev.add_metric([*mv, signal, name], v)
            if s.fallback_ratio is not None:
                fallback.add_metric(mv, s.fallback_ratio)
            if s.cloud_compared:
                cloud.add_metric([*mv, "agree"], s.cloud_agreed)
                cloud.add_metric([*mv, "disagree"], s.cloud_compared - s.cloud_agreed)
            if s.cloud_agreement_ratio is not None:
                cloud_ratio.add_metric(mv, s.cloud_agreement_ratio)
            crossed = {check for check, _ in quality_gate.breaches(self.breach, quality_gate.signals_of(s))}
            if s.psi and self.breach.max_psi is not None:
                breach.add_metric([*mv, "psi"], 1 if "psi" in crossed else 0)
            if s.psi_previous and self.breach.max_psi_previous is not None:
                breach.add_metric([*mv, "psi_previous"], 1 if "psi_previous" in crossed else 0)
            if self.breach.min_mean_confidence is not None and any(
                o.window_confidence_mean is not None for o in s.outputs
            ):
                breach.add_metric([*mv, "confidence"], 1 if "confidence" in crossed else 0)
        yield from (conf, margin, preds, rows, fmean, fvar, psi, psi_prev, fallback, cloud, cloud_ratio, breach, gate,
                    prev_loaded, writes)


class SiteCacheCollector(Collector):
    """The site cache's numbers (`edge-runtime site-cache`), read from its store at scrape time, so
    /metrics and /v1/status can never disagree: both read the same counters."""

    # name -> (help, kind); each is a key of the mapping the source returns.
    SERIES: ClassVar[dict[str, tuple[str, str]]] = {
        "hits": ("Blob requests answered from the cache", "counter"),
        "misses": ("Blob requests that waited on a fetch from the origin", "counter"),
        "origin_fetches": ("Fetches from the origin (concurrent misses of one digest share one)", "counter"),
        "origin_failures": ("Fetches from the origin that failed (unreachable, wrong bytes, too large)", "counter"),
        "bytes_served": ("Bytes sent to clients", "counter"),
        "bytes_from_origin": ("Verified bytes received from origins", "counter"),
        "evictions": ("Entries evicted to stay under --max-bytes", "counter"),
        "entries": ("Blobs held", "gauge"),
        "bytes_held": ("Bytes of the blobs held", "gauge"),
        "max_bytes": ("The size bound (--max-bytes)", "gauge"),
        "hit_ratio": ("hits / (hits + misses) since start (0 before any request)", "gauge"),
    }

    def __init__(self, source: Callable[[], Mapping[str, float]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        values = self._source()
        for key, (doc, kind) in self.SERIES.items():
            name = f"edgeai_site_cache_{key}"
            if kind == "counter":
                yield CounterMetricFamily(name, doc, value=values.get(key, 0))
            else:
                yield GaugeMetricFamily(name, doc, value=values.get(key, 0))
