"""One loaded ONNX model: an onnxruntime session plus what the protocol needs to know about it.

`load_model` takes bytes that `integrity.read_verified` returned (never a path),
so nothing reaches onnxruntime that has not been verified, and an encrypted
artifact's plaintext lives only in memory.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_runtime.artifacts.integrity import IntegrityError
from edge_runtime.core.protocol import DATATYPES, ONNX_TO_V2, InferenceRequest, InputRejected, ModelError, ProtocolError
from edge_runtime.core.providers import CPU, ProviderRequest, ordered, unavailable, with_cache

# A model whose batch-1 run takes less than this is run on the event loop
# itself: handing it to a thread costs more (a context switch and GIL
# hand-over, ~50-100 us) than the run. Slower models go to a worker thread so
# the loop keeps accepting and parsing requests while onnxruntime computes.
INLINE_RUN_SECONDS = 0.0005
WARMUP_RUNS = 5


try:
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as _INVALID_ARGUMENT
except ImportError:  # pragma: no cover - older wheels: nothing is classed as the input's fault
    _INVALID_ARGUMENT = ()


def _ort_message(e: Exception) -> str:
    # "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status ... Status Message: <the reason>"
    text = str(e)
    _, sep, reason = text.rpartition("Status Message: ")
    return (reason if sep else text).strip()[:500]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 where the graph leaves a dimension free

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _fits(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """`got` has `want`'s rank and its size wherever `want` fixes one (-1: any). A plain loop: this runs on
    every request, and all() over a generator costs twice as much for a shape of two or three dimensions."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):  # noqa: SIM110
        if w >= 0 and g != w:
            return False
    return True


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _spec(arg: Any) -> TensorSpec:
    datatype = ONNX_TO_V2.get(arg.type)
    if datatype is None:
        raise IntegrityError("InvalidModel", f"tensor '{arg.name}' has type {arg.type}, which the runtime cannot serve")
    return TensorSpec(arg.name, datatype, _dims(arg.shape or []))


def session_options(threads: int | None, spin_in_run: bool = False) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    # Spinning worker threads keep a core busy after each run (onnxruntime's default spins on for a
    # while); on a small edge device that core is the one the HTTP event loop needs. Not spinning at
    # all costs a thread wake-up per parallel section instead (a MobileNet-sized CNN: ~30 futex waits
    # per run, each a scheduler round trip), which on a quiet device is most of the runtime's latency
    # over a bare onnxruntime session. `spin_in_run` spins between the sections of a run and stops when
    # the run returns: the speed of the default, no core left busy after a run; but while a run lasts
    # a waiting worker competes with everything else for the cores (worse on a device that is busy).
    if spin_in_run:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    else:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


@dataclass(frozen=True, slots=True)
class ProviderOutcome:
    """Which execution provider a session got, and why each one before it in the list was passed over."""

    provider: str = CPU
    requested: tuple[str, ...] = (CPU,)
    passed_over: tuple[tuple[str, str], ...] = ()  # (provider, reason), in the order they were tried

    @property
    def reason(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in self.passed_over)

    def parameters(self) -> dict[str, str]:
        out = {"execution_provider": self.provider, "execution_providers_requested": ",".join(self.requested)}
        if self.passed_over:
            out["execution_provider_fallback"] = self.reason
        return out


@dataclass(slots=True)
class LoadedModel:
    name: str
    version: str
    sha256: str
    size: int
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batchable: bool
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    run_seconds_p50: float = 0.0
    run_inline: bool = False
    providers: ProviderOutcome = field(default_factory=ProviderOutcome)
    extra: dict[str, str] = field(default_factory=dict)
    _input_by_name: dict[str, TensorSpec] = field(default_factory=dict)
    _output_names: tuple[str, ...] = ()
    _run: Any = None

    def __post_init__(self) -> None:
        self._input_by_name = {s.name: s for s in self.inputs}
        self._output_names = tuple(s.name for s in self.outputs)
        self._run = _session_run(self.session, self.providers.provider, list(self._output_names))

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def metadata(self, versions: Sequence[str]) -> dict[str, Any]:
        params: dict[str, Any] = {"sha256": self.sha256, "size": self.size}
        params.update(self.providers.parameters())
        params.update(self.extra)
        return {
            "name": self.name,
            "versions": list(versions),
            "platform": "onnxruntime_onnx",
            "inputs": [s.as_json() for s in self.inputs],
            "outputs": [s.as_json() for s in self.outputs],
            "parameters": params,
        }

    def feeds(self, request: InferenceRequest) -> dict[str, np.ndarray]:
        """Check the request against the graph's inputs; say exactly what does not fit."""
        given = {t.name: t for t in request.inputs}
        for name in given:
            if name not in self._input_by_name:
                raise ProtocolError(
                    f"unexpected input '{name}': model '{self.name}' takes {sorted(self._input_by_name)}"
                )
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            t = given.get(spec.name)
            if t is None:
                raise ProtocolError(f"missing input '{spec.name}' ({spec.datatype} {list(spec.shape)})")
            if t.datatype != spec.datatype:
                raise ProtocolError(f"input '{spec.name}': datatype {t.datatype} given, model expects {spec.datatype}")
            if t.shape != spec.shape and not _fits(t.shape, spec.shape):
                raise ProtocolError(
                    f"input '{spec.name}': shape {list(t.shape)} does not fit the model's {list(spec.shape)} "
                    "(-1 = any size)"
                )
            arr = t.data
            if spec.datatype == "BYTES":
                arr = np.array(
                    [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else x for x in arr.reshape(-1)],
                    dtype=object,
                ).reshape(arr.shape)
            feeds[spec.name] = arr
        return feeds

    def check_outputs(self, names: Sequence[str]) -> None:
        for n in names:
            if n not in self._output_names:
                raise ProtocolError(f"unknown output '{n}': model '{self.name}' has {list(self._output_names)}")

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            out: list[np.ndarray] = self._run(feeds)
        except _INVALID_ARGUMENT as e:
            # onnxruntime's INVALID_ARGUMENT status: a kernel refused this input's values (an index out
            # of range, a shape the graph cannot take). The client's data is at fault; the model, which
            # passed its warm-up, is not.
            raise InputRejected(f"model '{self.name}' rejected the input: {_ort_message(e)}") from e
        except Exception as e:  # FAIL, RUNTIME_EXCEPTION, EP_FAIL, out of memory...: the model or the device
            raise ModelError(f"model '{self.name}' failed: {_ort_message(e)}") from e
        return out


def _session_run(session: ort.InferenceSession, provider: str, names: list[str]) -> Any:
    """`session.run(None, feeds)`, for a CPU session without the Python wrapper's per-call checks.

    onnxruntime's `InferenceSession.run` re-validates the feed's names, looks for OrtValues and for
    WebGPU graph capture, and rebuilds the output name list on every call: a third of a small model's
    run. `feeds` has already been checked against the graph here, so a CPU session is run through the
    binding the wrapper itself calls. Other providers keep the wrapper (it retries a failed execution
    provider on the CPU), and so does any onnxruntime without that binding.
    """
    inner = getattr(session, "_sess", None)
    if provider != CPU or inner is None or not callable(getattr(inner, "run", None)):
        return functools.partial(session.run, None)
    run = inner.run

    def fast(feeds: Mapping[str, np.ndarray]) -> Any:
        return run(names, feeds, None)

    return fast


log = logging.getLogger(__name__)

# Providers that run on CUDA and cuDNN: onnxruntime-gpu from PyPI (the cuda image's, with its [cuda,cudnn]
# extras) gets those libraries as nvidia-* wheels, outside the loader's search path.
_NVIDIA = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


@functools.cache
def _preload_nvidia_libraries() -> str:
    """Load CUDA and cuDNN from the nvidia-* wheels before the first CUDA/TensorRT session, as
    onnxruntime-gpu asks (`onnxruntime.preload_dlls`); where the libraries are on the loader's path
    already (a CUDA base image, or torch imported first) it changes nothing. Once per process; what
    onnxruntime prints about it goes to the log, and a failure is left for the session to report."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return ""
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            preload()
    except Exception as e:  # a missing library: the session's own error names it better
        said.write(f"{e.__class__.__name__}: {e}")
    text = said.getvalue().strip()
    if text:
        log.info("preloading CUDA/cuDNN for onnxruntime-gpu: %s", text)
    return text


def _ort_providers(req: ProviderRequest, cpu: ProviderRequest) -> list[Any]:
    return [(r.name, dict(r.options)) if r.options else r.name for r in ((req, cpu) if req is not cpu else (cpu,))]


def build_session(
    data: bytes,
    threads: int | None,
    requests: Sequence[ProviderRequest] = (),
    *,
    require_accelerator: bool = False,
    cache_dir: str | None = None,
    sha256: str = "",
    name: str = "",
    spin_in_run: bool = False,
) -> tuple[ort.InferenceSession, ProviderOutcome]:
    """A session on the first provider of `requests` that starts, the CPU last.

    A provider the installed onnxruntime lacks is passed over without a try; one that fails to
    start (no device, no driver), or that onnxruntime quietly replaced by the CPU, is passed over
    with its error. With `require_accelerator`, ending on the CPU is an error (IntegrityError
    NoAccelerator) naming each reason. Raises IntegrityError(InvalidModel) if even the CPU fails.
    """
    reqs = with_cache(ordered(requests), cache_dir, sha256)
    cpu = reqs[-1]
    passed: dict[str, str] = unavailable(reqs, ort.get_available_providers())
    requested = tuple(r.name for r in reqs)
    for r in reqs[:-1]:
        if r.name in passed:
            continue
        if r.name in _NVIDIA:
            _preload_nvidia_libraries()
        try:
            opts = session_options(threads, spin_in_run)
            session = ort.InferenceSession(data, opts, providers=_ort_providers(r, cpu))
        except Exception as e:
            passed[r.name] = f"failed to start: {_ort_message(e)}"
            continue
        got = session.get_providers()
        if got and got[0] == r.name:
            return session, ProviderOutcome(r.name, requested, tuple(passed.items()))
        passed[r.name] = f"onnxruntime did not register it (the session got {', '.join(got) or 'none'})"
    if require_accelerator:
        why = "; ".join(f"{n}: {w}" for n, w in passed.items()) or "the list names no accelerator provider"
        raise IntegrityError("NoAccelerator", f"model '{name}': an accelerator is required and none loaded ({why})")
    try:
        session = ort.InferenceSession(data, session_options(threads, spin_in_run), providers=_ort_providers(cpu, cpu))
    except Exception as e:
        raise IntegrityError("InvalidModel", f"onnxruntime cannot load model '{name}': {e}") from e
    return session, ProviderOutcome(CPU, requested, tuple(passed.items()))


def load_model(
    data: bytes,
    *,
    name: str,
    version: str,
    sha256: str,
    threads: int | None = None,
    providers: Sequence[ProviderRequest] = (),
    require_accelerator: bool = False,
    provider_cache: str | None = None,
    spin_in_run: bool = False,
) -> LoadedModel:
    """Build a session from verified bytes; raise IntegrityError(InvalidModel) if it is not a usable model,
    IntegrityError(NoAccelerator) if an accelerator is required and none of `providers` starts."""
    start = time.perf_counter()
    session, outcome = build_session(data, threads, providers, require_accelerator=require_accelerator,
                                     cache_dir=provider_cache, sha256=sha256, name=name, spin_in_run=spin_in_run)
    inputs = tuple(_spec(a) for a in session.get_inputs())
    outputs = tuple(_spec(a) for a in session.get_outputs())
    # Batching concatenates requests on axis 0: only safe when every input and
    # output has a free leading dimension.
    batchable = all(len(s.shape) >= 1 and s.shape[0] == -1 for s in (*inputs, *outputs))
    return LoadedModel(
        name=name,
        version=version,
        sha256=sha256,
        size=len(data),
        session=session,
        inputs=inputs,
        outputs=outputs,
        batchable=batchable,
        load_seconds=time.perf_counter() - start,
        providers=outcome,
    )


def _warmup_feed(spec: TensorSpec) -> np.ndarray:
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    if spec.datatype == "BYTES":
        arr = np.empty(shape, dtype=object)
        arr.fill("")
        return arr
    if spec.datatype == "BF16":
        raise IntegrityError("InvalidModel", f"input '{spec.name}' is bfloat16, which the runtime cannot feed")
    return np.zeros(shape, dtype=DATATYPES[spec.datatype])


def warm_up(model: LoadedModel, runs: int = WARMUP_RUNS) -> None:
    """Run the model on zeros a few times; refuse a model that cannot run.

    Also times the run, which decides whether requests run inline on the event
    loop or in a worker thread.
    """
    start = time.perf_counter()
    feeds = {s.name: _warmup_feed(s) for s in model.inputs}
    times: list[float] = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        try:
            model.session.run(None, feeds)
        except Exception as e:
            raise IntegrityError("WarmupFailed", f"model '{model.name}' failed its warm-up run: {e}") from e
        times.append(time.perf_counter() - t0)
    model.warmup_seconds = time.perf_counter() - start
    model.run_seconds_p50 = statistics.median(times)
    forced = os.environ.get("EDGEAI_RUN_INLINE")
    model.run_inline = forced == "1" if forced in ("0", "1") else model.run_seconds_p50 < INLINE_RUN_SECONDS
