"""The model repository: verified loading, hot swap, rollback, unload, index.

Beside inference (`dataplane`), not inside it. Transport-free: the REST and
gRPC adapters call `load`/`unload`/`index` and map the exceptions of
`protocol` to their status codes.

What a load may read (the repository API is reachable over the network):
- only the model cache, content-addressed: `<cache>/sha256/<digest>`. A load
  names a digest; a `path` parameter is accepted only when it is that very
  entry. No cache configured: loads can only reload or roll back what the
  operator's command line gave;
- only a regular file, opened without following a symlink and without
  blocking (a FIFO or a device is refused before any read);
- at most the declared `size` (or `max_model_bytes`), checked on the open
  file before reading, and the read stops there;
- within `load_timeout_s`; loads run in their own small thread pool, so one
  slow load never stalls inference or the loads of other models.
Failed loads of names that were never loaded leave nothing behind: no index
entry, no per-name metric series.

Longer than most modules: each of those limits is a few lines in the one load
path, and they are reviewed together because together they are what a network
caller can make the device read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.artifacts.integrity import IntegrityError, check_sha256, verify_bytes
from edge_runtime.core.protocol import LoadRefused, NotFound, ProtocolError
from edge_runtime.core.providers import ProviderRequest
from edge_runtime.serving.batching import Runner
from edge_runtime.serving.model import LoadedModel, load_model, warm_up
from edge_runtime.telemetry.metrics import RuntimeMetrics

log = logging.getLogger("edge_runtime.repository")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
DEFAULT_MAX_MODEL_BYTES = 4 << 30
DEFAULT_LOAD_TIMEOUT_S = 300.0
# Label used for loads of names that never served: one series, however many names are tried.
UNKNOWN_MODEL_LABEL = "_not_loaded"


@dataclass(frozen=True, slots=True)
class ModelSource:
    path: str
    sha256: str
    version: str
    signature: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    threads: int | None = None
    # Batches (or, without batching, requests) one model runs at once, each on its own worker thread. With
    # K > 1 and no `threads`, each run gets cores // K intra-op threads: K runs side by side instead of one
    # run whose threads wait on each other at every parallel section. More throughput for a model whose run
    # is mostly such sections (a CNN on a few cores); a lone request runs on fewer cores, so it is slower.
    parallel_runs: int = 1
    spin_in_run: bool = False  # onnxruntime's workers spin within a run, never after (model.session_options)
    max_batch_size: int = 0
    max_batch_delay_ms: float = 0.0
    public_key_pem: bytes | None = None
    decryption_key: bytes | None = None
    warmup_runs: int = 5
    model_cache: Path | None = None
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S
    # Tried in order, the CPU last; with require_accelerator a load that ends on the CPU is refused.
    execution_providers: tuple[ProviderRequest, ...] = ()
    require_accelerator: bool = False
    provider_cache: Path | None = None  # where TensorRT engines and OpenVINO blobs are kept

    @property
    def run_threads(self) -> int | None:
        """Intra-op threads of each session (None: onnxruntime's default, one per core)."""
        if self.threads or self.parallel_runs <= 1:
            return self.threads
        return max(1, len(os.sched_getaffinity(0)) // self.parallel_runs)


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


def default_version(sha256: str) -> str:
    return sha256[:12]


def cache_of(model_path: str, sha256: str) -> Path | None:
    """The cache a `--model <cache>/sha256/<digest>` path lives in (the operator's Pod layout), else None."""
    p = Path(model_path)
    if p.name == sha256 and p.parent.name == "sha256":
        return p.parent.parent
    return None


def read_model_file(path: str, max_bytes: int) -> bytes:
    """Read a model file with bounded work: regular files only, no symlink followed, never blocking on open."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise IntegrityError("NotFound", f"model file {path} does not exist") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise IntegrityError("NotRegularFile", f"{path} is a symbolic link; only regular files load") from e
        raise IntegrityError("Unreadable", f"{path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError("NotRegularFile", f"{path} is not a regular file")
        if st.st_size > max_bytes:
            raise IntegrityError("TooLarge", f"{path} is {st.st_size} bytes, over the limit of {max_bytes} bytes")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        left = st.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        # A file that grew after fstat is cut at the size seen: the digest check then refuses it.
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """A load's parameters; Triton's clients (`load_model(name, config=...)`) send them as one JSON string."""
    config = params.get("config")
    if config is None:
        return params
    try:
        extra = json.loads(config) if isinstance(config, str) and len(config) <= 1 << 16 else None
    except ValueError:
        extra = None
    if not isinstance(extra, dict):
        raise ProtocolError("parameter 'config' must be a JSON object of load parameters (as a string)")
    return {**{k: v for k, v in params.items() if k != "config"}, **extra}


class Repository:
    def __init__(
        self,
        settings: Settings,
        metrics: RuntimeMetrics,
        make_runner: Callable[[LoadedModel], Runner],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._make_runner = make_runner
        self.slots: dict[str, Slot] = {}
        # Two threads: a long verify of one model does not hold up the load of another.
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="edgeai-load")

    # --- reading and verifying ----------------------------------------------------------

    def load_verified(self, name: str, source: ModelSource) -> LoadedModel:
        """Read (bounded), verify, load and warm up (blocking). Raises IntegrityError naming the failure."""
        start = time.perf_counter()
        limit = self.settings.max_model_bytes
        if source.size is not None:
            limit = min(source.size, limit)
        try:
            raw = read_model_file(source.path, limit)
            data = verify_bytes(
                raw,
                source.sha256,
                what=source.path,
                public_key_pem_bytes=self.settings.public_key_pem,
                signature=source.signature,
                decryption_key=self.settings.decryption_key,
            )
            del raw
        except IntegrityError as e:
            self.metrics.verifications.labels(e.reason).inc()
            raise
        self.metrics.verifications.labels("ok").inc()
        st = self.settings
        model = load_model(data, name=name, version=source.version, sha256=source.sha256, threads=st.run_threads,
                           providers=st.execution_providers, require_accelerator=st.require_accelerator,
                           provider_cache=str(st.provider_cache) if st.provider_cache else None,
                           spin_in_run=st.spin_in_run)
        del data  # plaintext of an encrypted model must not outlive the session build
        warm_up(model, self.settings.warmup_runs)
        # Counted once the model is usable: a failed load of a new name leaves no series behind.
        for provider, why in model.providers.passed_over:
            self.metrics.provider_fallbacks.labels(name, provider).inc()
            log.warning("execution provider passed over",
                        extra={"model": name, "provider": provider, "reason": why})
        self.metrics.load_seconds.labels(name).observe(time.perf_counter() - start)
        return model

    # --- installing -------------------------------------------------------------------------

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
            self._forget_info(slot.name, m)
        if slot.previous is not None:
            p = slot.previous.model
            self.metrics.model_info.labels(slot.name, p.version, p.sha256).set(0)
            self.metrics.execution_provider.labels(slot.name, p.version, p.providers.provider).set(0)
        if slot.current is not None:
            c = slot.current.model
            self.metrics.model_info.labels(slot.name, c.version, c.sha256).set(1)
            self.metrics.execution_provider.labels(slot.name, c.version, c.providers.provider).set(1)

    def _forget_info(self, name: str, m: LoadedModel) -> None:
        with contextlib.suppress(KeyError):
            self.metrics.model_info.remove(name, m.version, m.sha256)
        with contextlib.suppress(KeyError):
            self.metrics.execution_provider.remove(name, m.version, m.providers.provider)

    def load_initial(self, name: str, source: ModelSource) -> LoadedModel:
        """Startup load: blocking, and any failure propagates so the server refuses to start."""
        try:
            model = self.load_verified(name, source)
        except IntegrityError:
            self.metrics.loads.labels(name, "failed").inc()
            raise
        slot = self.slots.setdefault(name, Slot(name))
        self._install(slot, Served(model, self._make_runner(model), source))
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
                "execution_provider": model.providers.provider,
                **({"provider_fallback": model.providers.reason} if model.providers.passed_over else {}),
            },
        )
        return model

    def source_from_parameters(self, name: str, params: dict[str, Any], slot: Slot | None) -> ModelSource:
        """A load request's parameters -> what to load; only entries of the model cache are accepted."""
        base = slot.last_source if slot is not None else None
        path = params.get("path", params.get("uri"))
        sha = params.get("sha256")
        if path is None and sha is None:
            if base is None:
                raise ProtocolError(f"model '{name}' was never loaded here: give parameter 'sha256' to load it")
            return base
        if not isinstance(sha, str):
            raise ProtocolError("parameter 'sha256' (the digest of a model in the cache) must be given")
        try:
            check_sha256(sha)
        except IntegrityError as e:
            raise ProtocolError(e.message) from e
        cache = self.settings.model_cache
        if cache is None:
            raise LoadRefused(
                "NoModelCache",
                "this runtime has no model cache (--model-cache): repository loads can only reload the "
                "last version or roll back",
            )
        entry = cache / "sha256" / sha
        if path is not None:
            if not isinstance(path, str) or not path:
                raise ProtocolError("parameter 'path' must be a non-empty string")
            if path.startswith("file://"):
                path = path[len("file://") :]
            if os.path.normpath(os.path.abspath(path)) != os.path.normpath(os.path.abspath(entry)):
                raise LoadRefused(
                    "OutsideCache",
                    f"loads read only the model cache: parameter 'path' must be {entry} (the entry of its "
                    "sha256), or be left out",
                )
        version = params.get("version", default_version(sha))
        signature = params.get("signature")
        size = params.get("size")
        if not isinstance(version, str) or not version or len(version) > 128:
            raise ProtocolError("parameter 'version' must be a non-empty string of at most 128 characters")
        if signature is not None and not isinstance(signature, str):
            raise ProtocolError("parameter 'signature' must be base64 text")
        if size is not None and (type(size) is not int or size < 0):
            raise ProtocolError("parameter 'size' must be a non-negative integer (bytes)")
        return ModelSource(str(entry), sha, version, signature, size)

    def _metric_name(self, name: str) -> str:
        return name if name in self.slots else UNKNOWN_MODEL_LABEL

    async def load(self, name: str, params: dict[str, Any]) -> Served:
        """Verify, load, warm up, then swap atomically; `{"rollback": true}` swaps back instantly.

        In-flight requests hold a reference to the version they started on and
        finish there. On any failure the serving version is untouched.
        """
        if not NAME_RE.match(name):
            raise ProtocolError(f"model name {name[:64]!r} must match {NAME_RE.pattern}")
        params = load_parameters(params)
        slot = self.slots.get(name)
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
        try:
            source = self.source_from_parameters(name, params, slot)
        except LoadRefused as e:
            self.metrics.loads.labels(self._metric_name(name), "refused").inc()
            log.warning("load refused", extra={"model": name, "reason": e.reason, "error": e.message})
            raise
        lock = slot.lock if slot is not None else asyncio.Lock()
        async with lock:
            if slot is not None:
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
                fut = loop.run_in_executor(self.executor, self.load_verified, name, source)
                try:
                    model = await asyncio.wait_for(fut, self.settings.load_timeout_s)
                except TimeoutError as e:
                    raise IntegrityError(
                        "LoadTimeout", f"load did not finish within {self.settings.load_timeout_s:g}s"
                    ) from e
            except IntegrityError as e:
                self.metrics.loads.labels(self._metric_name(name), "refused").inc()
                log.warning(
                    "load refused; the serving version keeps serving",
                    extra={"model": name, "reason": e.reason, "error": e.message, "sha256": source.sha256},
                )
                raise LoadRefused(e.reason, e.message) from e
            if slot is None:
                # Only a successful load creates the entry (a concurrent first load of the same name may
                # have won the race: join it).
                slot = self.slots.setdefault(name, Slot(name, lock=lock))
            served = Served(model, self._make_runner(model), source)
            evicted = self._install(slot, served)
            self.metrics.loads.labels(name, "ok").inc()
            log.info("model swapped in", extra={"model": name, "version": model.version, "sha256": model.sha256,
                                                "execution_provider": model.providers.provider})
        if evicted is not None:
            await evicted.runner.close()
        return served

    async def unload(self, name: str) -> None:
        slot = self.slots.get(name)
        if slot is None or slot.current is None:
            raise NotFound(f"model '{name}' is not loaded")
        async with slot.lock:
            gone = [s for s in (slot.current, slot.previous) if s is not None]
            slot.current = slot.previous = None
            for s in gone:
                self._forget_info(name, s.model)
            self.metrics.loads.labels(name, "unloaded").inc()
        for s in gone:
            await s.runner.close()
        log.info("model unloaded", extra={"model": name})

    # --- lookups ------------------------------------------------------------------------------

    def served(self, name: str, version: str | None = None) -> Served:
        slot = self.slots.get(name)
        if slot is None or slot.current is None:
            raise NotFound(f"model '{name[:128]}' is not loaded")
        if not version or slot.current.model.version == version:
            return slot.current
        if slot.previous is not None and slot.previous.model.version == version:
            return slot.previous
        raise NotFound(
            f"model '{name}' has no version '{version[:64]}' loaded (serving '{slot.current.model.version}')"
        )

    def versions(self, name: str) -> list[str]:
        slot = self.slots.get(name)
        if slot is None:
            return []
        return [s.model.version for s in (slot.current, slot.previous) if s is not None]

    def index(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, slot in sorted(self.slots.items()):
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

    async def close(self) -> None:
        for slot in self.slots.values():
            for s in (slot.current, slot.previous):
                if s is not None:
                    await s.runner.close()
        self.executor.shutdown(wait=False)


__all__ = [
    "ModelSource",
    "Repository",
    "Served",
    "Settings",
    "Slot",
    "cache_of",
    "default_version",
    "read_model_file",
]
