"""The dataplane: models by name, verified loading, hot swap, inference.

Transport-free: the ASGI adapter (`server`) turns HTTP into calls here and
results (or the exceptions below) back into HTTP. Each endpoint is
decode -> dataplane -> encode.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import __version__
from edge_runtime.batching import Runner
from edge_runtime.codec import ProtocolError, decode_request, encode_response, parse_header_length
from edge_runtime.fallback import Fallback
from edge_runtime.fallback_policy import top_confidence
from edge_runtime.health import ErrorWindow, Judgement, judge_readiness
from edge_runtime.integrity import IntegrityError, check_sha256, read_verified
from edge_runtime.metrics import RuntimeMetrics
from edge_runtime.model import LoadedModel, ModelError, load_model, warm_up

log = logging.getLogger("edge_runtime.dataplane")

SERVER_NAME = "edgeai-runtime"
EXTENSIONS = ["binary_tensor_data", "model_repository"]


class NotFound(Exception):
    """Unknown model or version (HTTP 404)."""


class LoadRefused(Exception):
    """A load was refused; the version already serving keeps serving (HTTP 400)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ModelSource:
    path: str
    sha256: str
    version: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    threads: int | None = None
    max_batch_size: int = 0
    max_batch_delay_ms: float = 0.0
    public_key_pem: bytes | None = None
    decryption_key: bytes | None = None
    warmup_runs: int = 5


@dataclass(slots=True)
class Served:
    model: LoadedModel
    runner: Runner
    source: ModelSource


@dataclass(slots=True)
class Slot:
    name: str
    current: Served | None = None
    previous: Served | None = None  # kept loaded for instant rollback
    last_source: ModelSource | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(slots=True)
class InferResult:
    body: bytes
    header_length: int | None
    source: str  # "edge" or "cloud"
    content_type: str = "application/json"


def default_version(sha256: str) -> str:
    return sha256[:12]


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
        self._slots: dict[str, Slot] = {}
        # One thread runs models (onnxruntime parallelises inside a run), one
        # loads them, so a big load never stalls inference.
        self.run_executor: Executor = ThreadPoolExecutor(1, thread_name_prefix="edgeai-run")
        self.load_executor: Executor = ThreadPoolExecutor(1, thread_name_prefix="edgeai-load")
        self._last_judgement: Judgement | None = None
        metrics.live(self.queue_depths, lambda: self.readiness().ready)

    # --- loading -------------------------------------------------------------

    def load_verified(self, name: str, source: ModelSource) -> LoadedModel:
        """Verify, load and warm up (blocking). Raises IntegrityError naming the failure."""
        start = time.perf_counter()
        try:
            data = read_verified(
                source.path,
                source.sha256,
                public_key_pem_bytes=self.settings.public_key_pem,
                signature=source.signature,
                decryption_key=self.settings.decryption_key,
            )
        except FileNotFoundError as e:
            self.metrics.verifications.labels("NotFound").inc()
            raise IntegrityError("NotFound", f"model file {source.path} does not exist") from e
        except IntegrityError as e:
            self.metrics.verifications.labels(e.reason).inc()
            raise
        self.metrics.verifications.labels("ok").inc()
        model = load_model(data, name=name, version=source.version, sha256=source.sha256, threads=self.settings.threads)
        del data  # plaintext of an encrypted model must not outlive the session build
        warm_up(model, self.settings.warmup_runs)
        self.metrics.load_seconds.labels(name).observe(time.perf_counter() - start)
        return model

    def _runner(self, model: LoadedModel) -> Runner:
        return Runner(
            model,
            self.run_executor,
            max_batch_size=self.settings.max_batch_size,
            max_delay=self.settings.max_batch_delay_ms / 1000.0,
            on_batch=functools.partial(self.metrics.observe_batch, model.name),
        )

    def _install(self, slot: Slot, served: Served) -> Served | None:
        """Make `served` current; the old current becomes previous. Returns what was evicted."""
        evicted = slot.previous
        if slot.current is not None and slot.current.model.sha256 != served.model.sha256:
            slot.previous = slot.current
        elif slot.current is not None:
            evicted = slot.current  # the same bytes again: nothing to roll back to
        slot.current = served
        slot.last_source = served.source
        self._publish_info(slot, evicted)
        return evicted

    def _publish_info(self, slot: Slot, evicted: Served | None) -> None:
        if evicted is not None and evicted is not slot.previous and evicted is not slot.current:
            m = evicted.model
            with contextlib.suppress(KeyError):
                self.metrics.model_info.remove(slot.name, m.version, m.sha256)
        if slot.previous is not None:
            p = slot.previous.model
            self.metrics.model_info.labels(slot.name, p.version, p.sha256).set(0)
        if slot.current is not None:
            c = slot.current.model
            self.metrics.model_info.labels(slot.name, c.version, c.sha256).set(1)

    def load_initial(self, name: str, source: ModelSource) -> LoadedModel:
        """Startup load: blocking, and any failure propagates so the server refuses to start."""
        try:
            model = self.load_verified(name, source)
        except IntegrityError:
            self.metrics.loads.labels(name, "failed").inc()
            raise
        slot = self._slots.setdefault(name, Slot(name))
        self._install(slot, Served(model, self._runner(model), source))
        self.metrics.loads.labels(name, "ok").inc()
        log.info(
            "model loaded",
            extra={
                "model": name,
                "version": model.version,
                "sha256": model.sha256,
                "batchable": model.batchable,
                "run_inline": model.run_inline,
                "warmup_p50_ms": round(model.run_seconds_p50 * 1000, 3),
            },
        )
        return model

    def source_from_parameters(self, name: str, params: dict[str, Any], slot: Slot | None) -> ModelSource:
        """A load request's parameters -> where to load from; errors name the bad field."""
        base = slot.last_source if slot is not None else None
        path = params.get("path", params.get("uri"))
        sha = params.get("sha256")
        if path is None and sha is None:
            if base is None:
                raise ProtocolError(
                    f"model '{name}' was never loaded here: give parameters 'path' and 'sha256' to load it"
                )
            return base
        if not isinstance(path, str) or not path:
            raise ProtocolError("parameter 'path' (the model file) must be a non-empty string")
        if path.startswith("file://"):
            path = path[len("file://") :]
        if "://" in path:
            raise ProtocolError(
                "parameter 'path' must be a local file: fetch remote artifacts with `edge-runtime fetch`"
            )
        if not isinstance(sha, str):
            raise ProtocolError("parameter 'sha256' must be given with 'path'")
        try:
            check_sha256(sha)
        except IntegrityError as e:
            raise ProtocolError(e.message) from e
        version = params.get("version", default_version(sha))
        signature = params.get("signature")
        if not isinstance(version, str) or not version:
            raise ProtocolError("parameter 'version' must be a non-empty string")
        if signature is not None and not isinstance(signature, str):
            raise ProtocolError("parameter 'signature' must be base64 text")
        return ModelSource(str(Path(path)), sha, version, signature)

    async def load(self, name: str, params: dict[str, Any]) -> Served:
        """Repository load: verify, load, warm up, then swap atomically.

        In-flight requests hold a reference to the version they started on and
        finish there. On any failure the serving version is untouched.
        `{"rollback": true}` swaps back to the previous version instantly.
        """
        slot = self._slots.get(name)
        if params.get("rollback") is True:
            if slot is None or slot.previous is None or slot.current is None:
                raise LoadRefused("NoPreviousVersion", f"model '{name}' has no previous version to roll back to")
            async with slot.lock:
                assert slot.previous is not None and slot.current is not None
                slot.current, slot.previous = slot.previous, slot.current
                slot.last_source = slot.current.source
                self._publish_info(slot, None)
                self.metrics.loads.labels(name, "rollback").inc()
                log.info("rolled back", extra={"model": name, "version": slot.current.model.version})
                return slot.current
        source = self.source_from_parameters(name, params, slot)
        if slot is None:
            slot = self._slots.setdefault(name, Slot(name))
        async with slot.lock:
            # Already loaded (serving or kept for rollback): promote it, no reload.
            for served in (slot.current, slot.previous):
                if served is not None and served.model.sha256 == source.sha256 and served.source == source:
                    if served is slot.previous:
                        slot.current, slot.previous = slot.previous, slot.current
                        slot.last_source = source
                        self._publish_info(slot, None)
                    return served
            loop = asyncio.get_running_loop()
            try:
                model = await loop.run_in_executor(self.load_executor, self.load_verified, name, source)
            except IntegrityError as e:
                self.metrics.loads.labels(name, "refused").inc()
                log.warning(
                    "load refused; the serving version keeps serving",
                    extra={"model": name, "reason": e.reason, "error": e.message, "sha256": source.sha256},
                )
                raise LoadRefused(e.reason, e.message) from e
            served = Served(model, self._runner(model), source)
            evicted = self._install(slot, served)
            self.metrics.loads.labels(name, "ok").inc()
            log.info("model swapped in", extra={"model": name, "version": model.version, "sha256": model.sha256})
        if evicted is not None:
            await evicted.runner.close()
        return served

    async def unload(self, name: str) -> None:
        slot = self._slots.get(name)
        if slot is None or slot.current is None:
            raise NotFound(f"model '{name}' is not loaded")
        async with slot.lock:
            gone = [s for s in (slot.current, slot.previous) if s is not None]
            slot.current = slot.previous = None
            for s in gone:
                with contextlib.suppress(KeyError):
                    self.metrics.model_info.remove(name, s.model.version, s.model.sha256)
            self.metrics.loads.labels(name, "unloaded").inc()
        for s in gone:
            await s.runner.close()
        log.info("model unloaded", extra={"model": name})

    # --- lookups ----------------------------------------------------------------

    def served(self, name: str, version: str | None = None) -> Served:
        slot = self._slots.get(name)
        if slot is None or slot.current is None:
            raise NotFound(f"model '{name}' is not loaded")
        if version is None or slot.current.model.version == version:
            return slot.current
        if slot.previous is not None and slot.previous.model.version == version:
            return slot.previous
        raise NotFound(f"model '{name}' has no version '{version}' loaded (serving '{slot.current.model.version}')")

    def versions(self, name: str) -> list[str]:
        slot = self._slots.get(name)
        if slot is None:
            return []
        return [s.model.version for s in (slot.current, slot.previous) if s is not None]

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        served = self.served(name, version)
        doc = served.model.metadata(self.versions(name))
        doc["parameters"].update(
            {
                "version": served.model.version,
                "serving": self._slots[name].current is served,
                **{k: v for k, v in served.runner.describe().items()},
            }
        )
        return doc

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def repository_index(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, slot in sorted(self._slots.items()):
            if slot.current is None:
                out.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
                continue
            for s in (slot.current, slot.previous):
                if s is not None:
                    out.append(
                        {
                            "name": name,
                            "version": s.model.version,
                            "state": "READY",
                            "reason": "serving" if s is slot.current else "kept for rollback",
                        }
                    )
        return out

    def readiness(self) -> Judgement:
        # A deliberately unloaded model does not make the server unready; having none loaded does.
        models = {n: True for n, s in self._slots.items() if s.current is not None}
        j = judge_readiness(models, self.errors.judge(self._clock()))
        if self._last_judgement is None or j.ready != self._last_judgement.ready:
            (log.info if j.ready else log.warning)("readiness changed", extra={"ready": j.ready, "reason": j.reason})
        self._last_judgement = j
        return j

    def queue_depths(self) -> dict[str, int]:
        out = {}
        for name, slot in self._slots.items():
            if slot.current is not None:
                out[name] = slot.current.runner.in_flight  # queued + running
        return out

    # --- inference ----------------------------------------------------------------

    async def infer(self, name: str, version: str | None, body: bytes, header_length_raw: str | None) -> InferResult:
        start = time.perf_counter()
        served = self.served(name, version)  # NotFound propagates: no model, no per-model metric
        model = served.model
        outcome = "ok"
        try:
            header_length = parse_header_length(header_length_raw, len(body))
            req = decode_request(body, header_length)
            feeds = model.feeds(req)
            if req.outputs is not None:
                model.check_outputs([o.name for o in req.outputs])
            outputs = await served.runner.run(feeds)
            if self.fallback is not None:
                conf = top_confidence(outputs)
                if conf is not None and conf < self.fallback.threshold:
                    result = await self._fallback(name, body, header_length, model, req, outputs, conf)
                    outcome = "ok" if result.source == "edge" else "cloud"
                    return result
            return self._encode(model, req, outputs, None)
        except ProtocolError:
            outcome = "bad_request"
            raise
        except ModelError:
            outcome = "error"
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            if outcome != "bad_request":  # a client's mistake says nothing about the runtime's health
                self.errors.record(self._clock(), outcome == "error", time.perf_counter() - start)
            self.metrics.observe_request(name, model.version, outcome, time.perf_counter() - start)

    def _encode(
        self, model: LoadedModel, req: Any, outputs: list[np.ndarray], parameters: dict[str, Any] | None
    ) -> InferResult:
        names = model.output_names
        if req.outputs is None:
            chosen = [(n, a, req.binary_output) for n, a in zip(names, outputs, strict=True)]
        else:
            index = {n: i for i, n in enumerate(names)}
            chosen = [
                (o.name, outputs[index[o.name]], req.binary_output if o.binary is None else o.binary)
                for o in req.outputs
            ]
        enc = encode_response(model.name, model.version, chosen, request_id=req.id, parameters=parameters)
        return InferResult(
            enc.body,
            enc.header_length,
            "edge",
            "application/json" if enc.header_length is None else "application/octet-stream",
        )

    async def _fallback(
        self,
        name: str,
        body: bytes,
        header_length: int | None,
        model: LoadedModel,
        req: Any,
        outputs: list[np.ndarray],
        confidence: float,
    ) -> InferResult:
        assert self.fallback is not None
        answer, outcome = await self.fallback.forward(name, body, header_length)
        if answer is not None:
            hl = int(answer.header_length) if answer.header_length is not None else None
            return InferResult(answer.body, hl, "cloud", answer.content_type)
        params = {"edgeai_source": "edge", "edgeai_fallback": outcome, "edgeai_confidence": round(confidence, 6)}
        return self._encode(model, req, outputs, params)

    async def close(self) -> None:
        for slot in self._slots.values():
            for s in (slot.current, slot.previous):
                if s is not None:
                    await s.runner.close()
        if self.fallback is not None:
            await self.fallback.close()
        self.run_executor.shutdown(wait=False)
        self.load_executor.shutdown(wait=False)


__all__ = ["DataPlane", "InferResult", "LoadRefused", "ModelSource", "NotFound", "Settings", "default_version"]
