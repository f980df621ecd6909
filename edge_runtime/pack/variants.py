"""The ONNX side of `pack`: check, convert, quantize, run and time models.

This is the only module that imports the `pack` extra (onnx,
onnxconverter-common) and onnxruntime's quantization tools; the runtime image
never imports it. That is also why it is longer than most: splitting it would
spread those imports (and the import-linter contract that keeps them out of
`pack`'s pure modules) over several files.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from onnxconverter_common import float16
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

from edge_runtime.core import providers as eps
from edge_runtime.pack.errors import PackError
from edge_runtime.serving.model import build_session

Feed = dict[str, np.ndarray]
Outputs = list[np.ndarray]
Int8Mode = Literal["dynamic", "static"]

# Batch rows per inference call when evaluating on many samples: large enough
# to be quick, small enough to stay far from memory limits on small machines.
EVAL_CHUNK = 32
# Every quantize attempt costs a full quantization and a session load; bound
# the search for ops the quantizer cannot handle.
MAX_QUANT_ATTEMPTS = 64
MAX_NODES_PROBED_PER_TYPE = 16
INT_INPUT_HIGH = 10

# Ops that carry the weights of a model. Only these are worth naming when the
# quantizer leaves them in float: a bias Add or a Mul by a constant is not news.
_WEIGHT_OPS = {
    "Attention",
    "Conv",
    "ConvTranspose",
    "Einsum",
    "EmbedLayerNormalization",
    "GRU",
    "Gather",
    "Gemm",
    "LSTM",
    "MatMul",
    "RNN",
}
# In dynamic mode onnxruntime rewrites Gemm into MatMul (+Add) before
# quantizing, so a Gemm is quantizable there, under the name "<node>_MatMul".
_DYNAMIC_EXTRA = {"Gemm"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype[Any]
    # int for a fixed dimension, str for a symbolic one ("N", or "?" if unnamed).
    shape: tuple[int | str, ...]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": str(self.dtype), "shape": list(self.shape)}


@dataclass
class LoadedModel:
    path: Path
    data: bytes
    proto: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    op_counts: Counter[str] = field(default_factory=Counter)


# --- loading and checking ----------------------------------------------------


def _tensor_specs(values: Sequence[onnx.ValueInfoProto], skip: set[str], where: str) -> list[TensorSpec]:
    specs = []
    for v in values:
        if v.name in skip:
            continue
        t = v.type
        if not t.HasField("tensor_type"):
            raise PackError("InvalidModel", f"{where} {v.name!r} is not a tensor; pack handles tensor models only")
        elem = t.tensor_type.elem_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        except (KeyError, TypeError, ValueError) as e:
            raise PackError("InvalidModel", f"{where} {v.name!r} has unsupported element type {elem}") from e
        dims: list[int | str] = []
        for d in t.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or "?")
        specs.append(TensorSpec(v.name, dtype, tuple(dims)))
    return specs


def load_checked(path: Path) -> LoadedModel:
    """Read `path`, prove it is a usable single-file ONNX model, or say precisely why not."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError as e:
        raise PackError("Unreadable", f"{path} is a directory, not an ONNX file") from e
    except OSError as e:
        raise PackError("Unreadable", f"cannot read {path}: {e.strerror or e}") from e
    if not data:
        raise PackError("InvalidModel", f"{path} is empty, not an ONNX model")
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # protobuf's DecodeError, among others: any parse failure means "not ONNX"
        raise PackError("InvalidModel", f"{path} is not an ONNX model (protobuf parse failed: {e})") from e
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise PackError("InvalidModel", f"{path} is not an ONNX model (no IR version or no graph)")
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise PackError(
                "InvalidModel",
                f"{path} keeps weights in external data files (tensor {init.name!r}); pack handles single-file models",
            )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PackError("InvalidModel", f"{path} fails the ONNX checker: {first}") from e
    initializers = {i.name for i in proto.graph.initializer}
    inputs = _tensor_specs(proto.graph.input, initializers, "input")
    if not inputs:
        raise PackError("InvalidModel", f"{path} has no inputs: nothing to feed, nothing to measure")
    outputs = _tensor_specs(proto.graph.output, set(), "output")
    if not outputs:
        raise PackError("InvalidModel", f"{path} has no outputs")
    for s in inputs:
        if s.dtype.kind not in "fiub":
            raise PackError("InvalidModel", f"input {s.name!r} has type {s.dtype}; pack handles numeric inputs")
    try:
        session(data, threads=1)
    except Exception as e:
        raise PackError("InvalidModel", f"onnxruntime cannot load {path}: {short_error(e)}") from e
    return LoadedModel(Path(path), data, proto, inputs, outputs, Counter(n.op_type for n in proto.graph.node))


def ort_version() -> str:
    return str(ort.__version__)


def short_error(e: BaseException | str | Warning, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- sessions, inputs, runs --------------------------------------------------


def session(model: bytes | Path, *, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # Fixed threads: latency numbers are comparable between variants and runs,
    # and a pack on a shared build machine does not grab every core.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def accelerator_providers(wanted: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The accelerator providers to measure on, by onnxruntime's name, and those asked for that this
    onnxruntime cannot run (with why). `wanted` None: every one this onnxruntime build has that the
    runtime knows (the CPU is always measured; onnxruntime's Azure provider runs no model locally)."""
    have = ort.get_available_providers()
    if wanted is None:
        known = set(eps.ORT_NAMES.values())
        return [p for p in have if p in known and eps.is_accelerator(p)], {}
    try:
        names = [eps.ort_name(w, "--providers") for w in wanted]
    except eps.ProviderSpecError as e:
        raise PackError("BadArgument", str(e)) from e
    accel = [n for n in dict.fromkeys(names) if eps.is_accelerator(n)]
    missing = eps.unavailable([eps.ProviderRequest(n) for n in accel], have)
    return [n for n in accel if n not in missing], missing


def provider_session(model: bytes, provider: str, *, threads: int, cache_dir: Path) -> ort.InferenceSession:
    """A session on `provider` alone (the CPU only for the ops it lacks), the way the runtime makes one;
    raises RuntimeError naming why when the provider does not start or onnxruntime quietly put the model
    on the CPU instead. Compiling providers (TensorRT, OpenVINO) write their caches under `cache_dir`."""
    import hashlib

    sess, got = build_session(model, threads, [eps.ProviderRequest(provider)], cache_dir=str(cache_dir),
                              sha256=hashlib.sha256(model).hexdigest(), name="pack")
    if got.provider != provider:
        raise RuntimeError(dict(got.passed_over).get(provider, got.reason) or f"{provider} did not start")
    return sess


def _resolve(spec: TensorSpec, rows: int, dims: Mapping[str, int]) -> tuple[int, ...]:
    shape = []
    for i, d in enumerate(spec.shape):
        if isinstance(d, int):
            shape.append(d if i else rows)
        elif d in dims:
            shape.append(dims[d] if i else rows)
        else:
            shape.append(rows if i == 0 else 1)
    return tuple(shape)


def batch_is_dynamic(inputs: Sequence[TensorSpec]) -> bool:
    return all(s.shape and isinstance(s.shape[0], str) for s in inputs)


def fixed_batch(inputs: Sequence[TensorSpec]) -> int:
    """Rows per call when the batch dimension is fixed (1 for scalar/rank-0 inputs)."""
    for s in inputs:
        if s.shape and isinstance(s.shape[0], int):
            return s.shape[0]
    return 1


def random_feeds(inputs: Sequence[TensorSpec], *, samples: int, seed: int, dims: Mapping[str, int]) -> list[Feed]:
    """Deterministic synthetic inputs: `samples` rows, in calls the model accepts.

    Floats are standard normal; integers are drawn from [0, INT_INPUT_HIGH) so
    that index-like inputs (Gather, embeddings) stay in range for small
    tables. Real data, when the user has it, comes through --calibration.
    """
    rng = np.random.default_rng(seed)
    dynamic = batch_is_dynamic(inputs)
    step = EVAL_CHUNK if dynamic else fixed_batch(inputs)
    feeds: list[Feed] = []
    done = 0
    while done < samples:
        rows = min(step, samples - done) if dynamic else step
        feed: Feed = {}
        for s in inputs:
            shape = _resolve(s, rows, dims) if s.shape else ()
            if s.dtype.kind == "f":
                feed[s.name] = rng.standard_normal(shape).astype(s.dtype)
            elif s.dtype.kind == "b":
                feed[s.name] = rng.random(shape) < 0.5
            else:
                feed[s.name] = rng.integers(0, INT_INPUT_HIGH, size=shape).astype(s.dtype)
        feeds.append(feed)
        done += rows
    return feeds


def npz_feeds(path: Path, inputs: Sequence[TensorSpec]) -> list[Feed]:
    """Calibration/sample data from an .npz: one array per model input, samples on axis 0."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except OSError as e:
        raise PackError("BadCalibration", f"cannot read calibration file {path}: {e}") from e
    except (ValueError, EOFError) as e:
        raise PackError("BadCalibration", f"{path} is not a numpy .npz archive: {e}") from e
    names = [s.name for s in inputs]
    missing = [n for n in names if n not in arrays]
    extra = [k for k in arrays if k not in names]
    if missing or extra:
        raise PackError(
            "BadCalibration",
            f"{path} must hold exactly one array per model input {names}; missing {missing}, unexpected {extra}",
        )
    counts = {n: arrays[n].shape[0] if arrays[n].ndim else 0 for n in names}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise PackError("BadCalibration", f"{path}: arrays must share a non-zero sample count on axis 0, got {counts}")
    total = next(iter(counts.values()))
    step = EVAL_CHUNK if batch_is_dynamic(inputs) else fixed_batch(inputs)
    if total % step and not batch_is_dynamic(inputs):
        raise PackError("BadCalibration", f"{path}: {total} samples do not split into batches of {step}")
    for s in inputs:
        a = arrays[s.name]
        if a.dtype.kind not in "fiub" or not np.can_cast(a.dtype, s.dtype, casting="same_kind"):
            raise PackError("BadCalibration", f"{path}: array {s.name!r} is {a.dtype}, the model wants {s.dtype}")
        if a.ndim != len(s.shape):
            raise PackError(
                "BadCalibration", f"{path}: array {s.name!r} has rank {a.ndim}, the model input has rank {len(s.shape)}"
            )
        for i, d in enumerate(s.shape[1:], start=1):
            if isinstance(d, int) and a.shape[i] != d:
                raise PackError(
                    "BadCalibration", f"{path}: array {s.name!r} has shape {a.shape}, the model wants {s.shape}"
                )
    return [
        {s.name: arrays[s.name][i : i + step].astype(s.dtype, copy=False) for s in inputs}
        for i in range(0, total, step)
    ]


def run_all(sess: ort.InferenceSession, feeds: Sequence[Feed]) -> list[Outputs]:
    return [[np.asarray(o) for o in sess.run(None, f)] for f in feeds]


def concat(per_feed: Sequence[Outputs], index: int) -> np.ndarray:
    return np.concatenate([o[index] for o in per_feed], axis=0)


def flatten_outputs(per_feed: Sequence[Outputs]) -> list[np.ndarray]:
    """All outputs of all calls, in order: the unit `max_abs_error` compares."""
    return [o for outs in per_feed for o in outs]


def batch_of(feed: Feed, rows: int, dynamic: bool) -> Feed:
    """`rows` rows taken (cycling) from `feed`; a model with a fixed batch gets its own batch."""
    if not dynamic:
        return feed
    out = {}
    for k, v in feed.items():
        idx = np.arange(rows) % v.shape[0]
        out[k] = np.ascontiguousarray(v[idx])
    return out


def time_runs(sess: ort.InferenceSession, feed: Feed, *, runs: int, warmup: int) -> list[float]:
    """Wall time of `runs` single calls after `warmup` untimed ones (first calls allocate)."""
    for _ in range(warmup):
        sess.run(None, feed)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        out.append(time.perf_counter() - t0)
    return out


def check_outputs(reference: Sequence[Outputs], candidate: Sequence[Outputs]) -> None:
    for ref, cand in zip(reference, candidate, strict=True):
        for i, (r, c) in enumerate(zip(ref, cand, strict=True)):
            if r.shape != c.shape:
                raise ValueError(f"output {i} has shape {c.shape}, fp32 gives {r.shape}")
            if np.issubdtype(c.dtype, np.floating) and not np.all(np.isfinite(c)):
                raise ValueError(f"output {i} holds NaN or infinity")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the quantizer's and converter's advice printed through logging/warnings.

    What matters from them is turned into report notes instead.
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


# --- fp16 --------------------------------------------------------------------


def to_fp16(model: LoadedModel) -> tuple[bytes, list[str]]:
    """fp16 weights and compute, fp32 inputs/outputs so clients send the same tensors to every variant."""
    notes = []
    blocked = sorted(op for op in model.op_counts if op in float16.DEFAULT_OP_BLOCK_LIST)
    if blocked:
        notes.append(f"kept in fp32 (no fp16 kernel in onnxruntime): {', '.join(blocked)}")
    copy = onnx.ModelProto()
    copy.CopyFrom(model.proto)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            # check_fp16_ready=False: a model that already holds some fp16
            # tensors (an fp16 embedding table, say) is still worth converting;
            # the result is checked by loading and running it anyway.
            converted = float16.convert_float_to_float16(copy, keep_io_types=True, check_fp16_ready=False)
        finally:
            root.setLevel(level)
    clipped = [w for w in caught if "truncated" in str(w.message) or "fp16" in str(w.message).lower()]
    if clipped:
        notes.append(
            f"{len(clipped)} converter warning(s) about values outside fp16 range, first: "
            f"{short_error(clipped[0].message, 160)}"
        )
    return converted.SerializeToString(), notes


# --- int8 --------------------------------------------------------------------


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, feeds: Sequence[Feed]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._it, None)


@dataclass
class Int8Build:
    data: bytes | None
    mode: Int8Mode
    notes: list[str]
    failure: str = ""
    quantized: Counter[str] = field(default_factory=Counter)


def _named_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name: the quantizer selects and excludes nodes by name."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    seen: set[str] = set()
    for i, n in enumerate(copy.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
    return copy


def _weighted(node: onnx.NodeProto, float_inits: set[str]) -> bool:
    return any(i in float_inits for i in node.input)


def to_int8(
    model: LoadedModel,
    work: Path,
    *,
    calibration: Sequence[Feed] | None,
    check_feeds: Sequence[Feed],
    reference: Sequence[Outputs],
    exclude_ops: Sequence[str] = (),
    exclude_nodes: Sequence[str] = (),
    per_channel: bool = False,
    threads: int = 1,
) -> Int8Build:
    """Quantize with onnxruntime; find and keep in float what the quantizer cannot handle.

    Dynamic quantization (weights int8 ahead of time, activations at run time)
    unless calibration feeds are given, then static QDQ quantization, the form
    NPU execution providers consume. A quantized model only counts if
    onnxruntime loads it and it gives finite outputs of the right shapes on
    `check_feeds`; when it does not, op types and then single nodes are
    probed, and the culprits are left in float.
    """
    mode: Int8Mode = "static" if calibration else "dynamic"
    registry = set(QDQRegistry) if mode == "static" else set(IntegerOpsRegistry) | _DYNAMIC_EXTRA
    named = _named_copy(model.proto)
    src = work / "int8-src.onnx"
    src.write_bytes(named.SerializeToString())
    notes: list[str] = []

    float_inits = {
        i.name
        for i in named.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    }
    no_kernel = Counter(
        n.op_type
        for n in named.graph.node
        if n.op_type in _WEIGHT_OPS and n.op_type not in registry and _weighted(n, float_inits)
    )
    if no_kernel:
        notes.append(
            f"kept in float (the {mode} int8 quantizer does not handle them): "
            + ", ".join(f"{op} x{c}" for op, c in sorted(no_kernel.items()))
        )
    user_ops, user_nodes = set(exclude_ops), set(exclude_nodes)
    unknown = user_nodes - {n.name for n in named.graph.node}
    if unknown:
        raise PackError("BadArgument", f"--exclude-nodes names no node of the model: {sorted(unknown)}")
    candidates = [
        n for n in named.graph.node if n.op_type in registry and n.op_type not in user_ops and n.name not in user_nodes
    ]
    if user_ops or user_nodes:
        notes.append(f"kept in float as asked: {sorted(user_ops | user_nodes)}")
    if not candidates:
        return Int8Build(
            None,
            mode,
            notes,
            failure=f"no op the {mode} int8 quantizer handles (model ops: {', '.join(sorted(model.op_counts))})",
        )

    attempts = 0

    def quantize(nodes: Sequence[onnx.NodeProto]) -> tuple[bytes | None, str]:
        nonlocal attempts
        attempts += 1
        out = work / f"int8-{attempts}.onnx"
        names = []
        for n in nodes:
            names.append(n.name)
            if mode == "dynamic" and n.op_type == "Gemm":
                names.append(n.name + "_MatMul")
        types = sorted({n.op_type for n in nodes} | ({"MatMul"} if mode == "dynamic" else set()))
        try:
            with _quiet():
                if mode == "static":
                    quantize_static(
                        src,
                        out,
                        _Reader(calibration or []),
                        quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=types,
                        nodes_to_quantize=names,
                        per_channel=per_channel,
                        activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                    )
                else:
                    quantize_dynamic(
                        src,
                        out,
                        op_types_to_quantize=types,
                        nodes_to_quantize=names,
                        per_channel=per_channel,
                        weight_type=QuantType.QInt8,
                    )
            data = out.read_bytes()
            sess = session(data, threads=threads)
            check_outputs(reference[:1], run_all(sess, check_feeds[:1]))
        except Exception as e:
            return None, short_error(e)
        return data, ""

    data, err = quantize(candidates)
    if data is None:
        notes.append("quantizing every candidate op failed; probed op types and nodes to find the culprits")
        by_type: dict[str, list[onnx.NodeProto]] = {}
        for n in candidates:
            by_type.setdefault(n.op_type, []).append(n)
        bad: dict[str, str] = {}
        for _op, nodes in sorted(by_type.items()):
            if attempts >= MAX_QUANT_ATTEMPTS:
                break
            _, type_err = quantize(nodes)
            if not type_err:
                continue
            if len(nodes) > MAX_NODES_PROBED_PER_TYPE:
                bad.update({n.name: type_err for n in nodes})
                continue
            for n in nodes:
                if attempts >= MAX_QUANT_ATTEMPTS:
                    bad[n.name] = type_err
                    continue
                _, node_err = quantize([n])
                if node_err:
                    bad[n.name] = node_err
        kept = [n for n in candidates if n.name not in bad]
        if bad:
            by_op = Counter(n.op_type for n in candidates if n.name in bad)
            first = next(iter(bad.values()))
            notes.append(
                "the int8 quantizer cannot handle "
                + ", ".join(
                    f"{op} ({', '.join(n.name for n in candidates if n.op_type == op and n.name in bad)})"
                    for op in sorted(by_op)
                )
                + f"; kept in float. First error: {first}"
            )
        if not kept:
            return Int8Build(None, mode, notes, failure=f"no op could be quantized: {err}")
        data, err = quantize(kept)
        if data is None:
            return Int8Build(None, mode, notes, failure=f"quantized model does not load or run: {err}")
        candidates = kept
    quantized = Counter(n.op_type for n in candidates)
    if mode == "dynamic" and quantized["Conv"]:
        # onnxruntime's CPU ConvInteger (what dynamic mode makes of Conv) is a
        # slow reference kernel; static QDQ Conv is the optimized path, and the
        # form NPU execution providers take. Say so, since the report shows it.
        notes.append(
            "dynamic int8 Conv runs as ConvInteger, slow on onnxruntime's CPU; for CNNs give --calibration "
            "(static QDQ int8, faster and what NPUs load) or --exclude-ops Conv"
        )
    return Int8Build(data, mode, notes, quantized=quantized)
