"""The dataplane: typed inference over the models of the repository.

`DataPlane.infer(model, version, InferenceRequest) -> InferenceResponse`.
Transport-free: the REST adapter (`server`) and the gRPC adapter
(`grpc_server`) decode their wire format into `protocol`'s typed request,
call here, and encode the typed response (or map the exception) back. Each
endpoint is decode -> dataplane -> encode. Loading, hot swap and the index
live beside this, in `repository`.

Readiness: only failures of the runtime or the model on a valid request
count against it (`ModelError`); a request that does not fit the model
(`ProtocolError`) or whose values the model refuses (`InputRejected`) is the
client's mistake and never does, so no client can take a device out of
service by sending bad requests.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from edge_runtime import __version__
from edge_runtime.core import quality, quality_gate
from edge_runtime.core.fallback_policy import top_confidence
from edge_runtime.core.health import ErrorWindow, Judgement, judge_readiness
from edge_runtime.core.protocol import (
    InferenceRequest,
    InferenceResponse,
    InputRejected,
    LoadRefused,
    ModelError,
    NotFound,
    OutputTensor,
    ProtocolError,
)
from edge_runtime.serving.batching import Runner
from edge_runtime.serving.model import LoadedModel
from edge_runtime.serving.repository import ModelSource, Repository, Served, Settings, default_version
from edge_runtime.telemetry.metrics import RuntimeMetrics

log = logging.getLogger("edge_runtime.dataplane")

SERVER_NAME = "edgeai-runtime"
EXTENSIONS = ["binary_tensor_data", "model_repository"]

# Outcome labels of edgeai_requests_total. Only "error" counts against readiness.
OK, CLOUD, BAD_REQUEST, REJECTED, ERROR = "ok", "cloud", "bad_request", "input_rejected", "error"


class Fallback(Protocol):
    """What the dataplane needs of the edge-cloud fallback (`fallback.Fallback`, which brings the HTTP
    and gRPC clients the dataplane itself must not import)."""

    threshold: float

    async def forward(self, model: str, req: InferenceRequest) -> tuple[InferenceResponse | None, str, int]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        metrics: RuntimeMetrics,
        *,
        fallback: Fallback | None = None,
        error_window: ErrorWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.fallback = fallback
        self.errors = error_window or ErrorWindow()
        self._clock = clock
        # One thread runs models (onnxruntime parallelises inside a run), or one per parallel run
        # (Settings.parallel_runs); loads have their own pool.
        self.run_executor: Executor = ThreadPoolExecutor(max(1, settings.parallel_runs),
                                                         thread_name_prefix="edgeai-run")
        self.repository = Repository(settings, metrics, self._runner)
        self._last_judgement: Judgement | None = None
        self._gate: tuple[str, quality_gate.Gate, Callable[[quality_gate.Verdict], None]] | None = None
        # readiness() runs on the event loop (probes) and, with --metrics-port, on the metrics thread too.
        self._gate_lock = threading.Lock()
        metrics.live(self.queue_depths, lambda: self.readiness().ready)

    def _runner(self, model: LoadedModel) -> Runner:
        return Runner(
            model,
            self.run_executor,
            max_batch_size=self.settings.max_batch_size,
            max_delay=self.settings.max_batch_delay_ms / 1000.0,
            on_batch=functools.partial(self.metrics.observe_batch, model.name),
            parallel=self.settings.parallel_runs,
        )

    # --- repository (delegated, so transports hold one object) -------------------------

    def load_initial(self, name: str, source: ModelSource) -> LoadedModel:
        return self.repository.load_initial(name, source)

    async def load(self, name: str, params: dict[str, Any]) -> Served:
        return await self.repository.load(name, params)

    async def unload(self, name: str) -> None:
        await self.repository.unload(name)

    def repository_index(self) -> list[dict[str, Any]]:
        return self.repository.index()

    def served(self, name: str, version: str | None = None) -> Served:
        return self.repository.served(name, version)

    # --- metadata and health ---------------------------------------------------------------

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        served = self.served(name, version)
        doc = served.model.metadata(self.repository.versions(name))
        doc["parameters"].update(
            {
                "version": served.model.version,
                "serving": self.repository.slots[name].current is served,
                **served.runner.describe(),
            }
        )
        return doc

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def model_ready(self, name: str, version: str | None) -> bool:
        try:
            self.served(name, version)
        except NotFound:
            return False
        return True

    def readiness(self) -> Judgement:
        # A deliberately unloaded model does not make the server unready; having none loaded does.
        models = {n: True for n, s in self.repository.slots.items() if s.current is not None}
        j = judge_readiness(models, self.errors.judge(self._clock()))
        if self._gate is not None:
            j = self._judge_quality(j)
        if self._last_judgement is None or j.ready != self._last_judgement.ready:
            (log.info if j.ready else log.warning)("readiness changed", extra={"ready": j.ready, "reason": j.reason})
        self._last_judgement = j
        return j

    def queue_depths(self) -> dict[str, int]:
        out = {}
        for name, slot in self.repository.slots.items():
            if slot.current is not None:
                out[name] = slot.current.runner.in_flight  # queued + running
        return out

    # --- inference ------------------------------------------------------------------------------

    def client_error(self, name: str, version: str | None, protocol: str, seconds: float) -> None:
        """A request of a served model that its transport could not decode: counted, never judged."""
        try:
            served = self.served(name, version)
        except NotFound:
            return  # unknown names get no series: their number is the client's to choose
        self.metrics.observe_request(name, served.model.version, BAD_REQUEST, seconds, protocol)

    async def infer(
        self, name: str, version: str | None, req: InferenceRequest, protocol: str = "rest", started: float = 0.0
    ) -> InferenceResponse:
        start = started or time.perf_counter()
        served = self.served(name, version)  # NotFound propagates: no model, no per-model metric
        model = served.model
        outcome = OK
        try:
            feeds = model.feeds(req)
            if req.outputs is not None:
                model.check_outputs([o.name for o in req.outputs])
            outputs = await served.runner.run(feeds)
            resp = self._response(model, req, outputs, None)
            hard: bool | None = None
            if self.fallback is not None:
                conf = top_confidence(outputs)
                hard = conf is not None and conf < self.fallback.threshold
            if self.metrics.quality.enabled:
                self._observe_quality(model, feeds, outputs, hard)
            if hard:
                assert conf is not None
                resp = await self._fallback(name, req, resp, conf)
                outcome = OK if resp.source == "edge" else CLOUD
                if resp.source == "cloud" and self.metrics.quality.enabled:
                    self._compare_with_cloud(model, outputs, resp)
            return resp
        except ProtocolError:
            outcome = BAD_REQUEST
            raise
        except InputRejected:
            outcome = REJECTED
            raise
        except ModelError:
            outcome = ERROR
            raise
        except Exception as e:
            outcome = ERROR
            log.exception("inference failed in the runtime", extra={"model": name})
            raise ModelError(f"model '{name}' failed in the runtime: {type(e).__name__}: {e}") from e
        finally:
            elapsed = time.perf_counter() - start
            if outcome in (OK, CLOUD, ERROR):  # a client's mistake says nothing about the runtime's health
                self.errors.record(self._clock(), outcome == ERROR, elapsed)
            self.metrics.observe_request(name, model.version, outcome, elapsed, protocol)

    # --- quality signals (core/quality.py; exported by telemetry.metrics.QualityMetrics) ---------------

    def set_quality_gate(
        self, name: str, gate: quality_gate.Gate, on_decided: Callable[[quality_gate.Verdict], None]
    ) -> None:
        """Judge model `name`'s answers with `gate` (core/quality_gate.py) into readiness while it judges;
        `on_decided` gets the verdict once (the caller records it, and exits on a failure)."""
        self._gate = (name, gate, on_decided)
        self.metrics.quality.gate = (name, gate)

    def _judge_quality(self, j: Judgement) -> Judgement:
        assert self._gate is not None
        name, gate, on_decided = self._gate
        with self._gate_lock:
            return self._judge_quality_locked(j, name, gate, on_decided)

    def _judge_quality_locked(
        self, j: Judgement, name: str, gate: quality_gate.Gate, on_decided: Callable[[quality_gate.Verdict], None]
    ) -> Judgement:
        if gate.verdict is None:
            slot = self.repository.slots.get(name)
            served = slot.current if slot is not None else None
            entry = self.metrics.quality.entries.get((name, served.model.version)) if served is not None else None
            s = quality_gate.signals_of(entry.snapshot()) if entry is not None else quality_gate.Signals(0, 0, None, {})
            v = gate.judge(self._clock(), s)
            if v.decided:
                (log.info if v.ready else log.error)(v.reason, extra={"model": name, "quality_gate": v.state})
                on_decided(v)
        else:
            v = gate.verdict
        if not v.ready:
            return Judgement(False, v.reason)
        return j

    def set_quality_profile(self, name: str, profile: quality.Profile) -> None:
        """Compare model `name`'s answers with `profile` from now on; ProfileError if they do not fit."""
        served = self.served(name)
        profile.check_layout(self._quality_layout(served.model))
        self.metrics.quality.profiles[name] = profile

    def set_previous_window(self, name: str, revision: str, window: quality.Profile) -> None:
        """Compare model `name`'s answers also with the previous revision's window on this device (a second
        reference, serving/quality_windows.py); ProfileError if it does not fit the model."""
        window.check_layout(self.quality_layout(name))
        self.metrics.quality.previous[name] = (revision, window)

    def quality_layout(self, name: str) -> quality.Layout:
        return self._quality_layout(self.served(name).model)

    def quality_window(self, name: str, source: str) -> quality.Profile | None:
        """Model `name`'s current window as a profile, for the next revision on this device: None while its
        Pod's gate has not passed (a build that fails its gate must not become the next one's yardstick), and
        before the window holds enough rows."""
        if self._gate is not None and self._gate[0] == name and self._gate[1].state != quality_gate.PASSED:
            return None
        slot = self.repository.slots.get(name)
        served = slot.current if slot is not None else None
        entry = self.metrics.quality.entries.get((name, served.model.version)) if served is not None else None
        return entry.window_profile(source) if entry is not None else None

    @staticmethod
    def _quality_layout(model: LoadedModel) -> quality.Layout:
        return quality.layout_of(
            [(s.name, s.datatype, s.shape) for s in model.inputs],
            [(s.name, s.datatype, s.shape) for s in model.outputs],
        )

    def _observe_quality(
        self, model: LoadedModel, feeds: dict[str, np.ndarray], outputs: list[np.ndarray], hard: bool | None
    ) -> None:
        q = self.metrics.quality
        entry = q.entries.get((model.name, model.version))
        if entry is None:
            entry = q.track(model.name, model.version, self._quality_layout(model), model.output_names)
        entry.stage(feeds, outputs, hard)

    def _compare_with_cloud(self, model: LoadedModel, outputs: list[np.ndarray], resp: InferenceResponse) -> None:
        """Whether the cloud's top class matched the edge's, on the classifier outputs both gave."""
        entry = self.metrics.quality.entries.get((model.name, model.version))
        if entry is None:
            return
        edge = dict(zip(model.output_names, outputs, strict=True))
        for name, _ in entry.tracker.layout.outputs:
            cloud = next((o.data for o in resp.outputs if o.name == name), None)
            if name in edge and isinstance(cloud, np.ndarray):
                agreed, compared = quality.agreement(edge[name], cloud)
                if compared:
                    entry.record_cloud(agreed, compared)
                return

    @staticmethod
    def _response(
        model: LoadedModel, req: InferenceRequest, outputs: list[np.ndarray], parameters: dict[str, Any] | None
    ) -> InferenceResponse:
        names = model.output_names
        if req.outputs is None:
            binary = req.binary_output
            chosen = [OutputTensor(n, a, binary) for n, a in zip(names, outputs, strict=True)]
        else:
            index = {n: i for i, n in enumerate(names)}
            chosen = [
                OutputTensor(o.name, outputs[index[o.name]], req.binary_output if o.binary is None else o.binary)
                for o in req.outputs
            ]
        return InferenceResponse(model.name, model.version, chosen, req.id, parameters)

    async def _fallback(
        self, name: str, req: InferenceRequest, edge: InferenceResponse, confidence: float
    ) -> InferenceResponse:
        assert self.fallback is not None
        answer, outcome, dropped = await self.fallback.forward(name, req)
        if answer is not None:
            # The client chose its encoding; the cloud's answer is re-encoded to it by the transport.
            binary = {o.name: o.binary for o in edge.outputs}
            outs = [OutputTensor(o.name, o.data, binary.get(o.name, req.binary_output)) for o in answer.outputs]
            cloud_params = dict(answer.parameters or {})
            cloud_params["edgeai_source"] = "cloud"
            return InferenceResponse(name, edge.model_version, outs, req.id, cloud_params, source="cloud")
        params: dict[str, Any] = {
            "edgeai_source": "edge",
            "edgeai_fallback": outcome,
            "edgeai_confidence": round(confidence, 6),
        }
        if dropped:
            # The durable queue was full: this request's example pushed older ones out. Say so.
            params["edgeai_hard_examples_dropped"] = dropped
        edge.parameters = params
        return edge

    async def close(self) -> None:
        await self.repository.close()
        if self.fallback is not None:
            await self.fallback.close()
        self.run_executor.shutdown(wait=False)


__all__ = [
    "DataPlane",
    "LoadRefused",
    "ModelSource",
    "NotFound",
    "Settings",
    "default_version",
]
