"""Which onnxruntime execution providers a model is run on, in what order, with what options.

Pure. The operator passes an ordered list (`--execution-providers`, JSON, the form of
`spec.runtime.executionProviders`; or `--execution-provider NAME[:k=v,...]`, repeated); this module
reads it, names each entry by onnxruntime's own name, puts the CPU last, fills in the cache
directories of the providers that compile (TensorRT engines, OpenVINO blobs), and says which
entries the installed onnxruntime cannot run at all. `serving.model` then tries them in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edgeai_api.enums import ExecutionProvider

CPU = "CPUExecutionProvider"
SUFFIX = "ExecutionProvider"
# The CRD's short name -> onnxruntime's name (which is not always `<short>ExecutionProvider`).
ORT_NAMES: Mapping[str, str] = {
    ExecutionProvider.TENSORRT: "TensorrtExecutionProvider",
    ExecutionProvider.CUDA: "CUDAExecutionProvider",
    ExecutionProvider.MIGRAPHX: "MIGraphXExecutionProvider",
    ExecutionProvider.ROCM: "ROCMExecutionProvider",
    ExecutionProvider.OPENVINO: "OpenVINOExecutionProvider",
    ExecutionProvider.QNN: "QNNExecutionProvider",
    ExecutionProvider.CANN: "CANNExecutionProvider",
    ExecutionProvider.CPU: CPU,
}
# Options naming a directory the provider writes its compiled form to, below the provider cache.
CACHE_OPTIONS: Mapping[str, Mapping[str, str]] = {
    "TensorrtExecutionProvider": {"trt_engine_cache_enable": "True", "trt_engine_cache_path": "tensorrt",
                                  "trt_timing_cache_enable": "True", "trt_timing_cache_path": "tensorrt"},
    "OpenVINOExecutionProvider": {"cache_dir": "openvino"},
}
# Either form, any case.
_BY_KEY = {k.lower(): v for k, v in ORT_NAMES.items()} | {v.lower(): v for v in ORT_NAMES.values()}


class ProviderSpecError(ValueError):
    """A provider list that cannot be read; the message names the flag and the entry."""


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    name: str  # onnxruntime's name, e.g. CUDAExecutionProvider
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return next((k for k, v in ORT_NAMES.items() if v == self.name), self.name.removesuffix(SUFFIX))


def ort_name(name: str, what: str = "--execution-providers") -> str:
    key = name.strip().lower()
    found = _BY_KEY.get(key)
    if found is None:
        # A provider we have no short name for is still passed through in onnxruntime's own form.
        if key.endswith(SUFFIX.lower()) and name.strip().isidentifier():
            return name.strip()
        known = ", ".join(p.value for p in ExecutionProvider)
        raise ProviderSpecError(f"{what}: unknown execution provider {name!r} (known: {known}, "
                                "or onnxruntime's full name ending in ExecutionProvider)")
    return found


def _options(raw: object, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ProviderSpecError(f"{what}: 'options' must be an object of string values")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not k or isinstance(v, (dict, list)) or v is None:
            raise ProviderSpecError(f"{what}: option {k!r} must be a non-empty name with a string value")
        out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def parse_json(text: str, flag: str = "--execution-providers") -> list[ProviderRequest]:
    """`[{"name": "CUDA", "options": {"device_id": "0"}}, "CPU"]`: objects or bare names."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProviderSpecError(f"{flag}: not JSON ({e.msg} at position {e.pos}); give a list such as "
                                '[{"name": "CUDA"}, {"name": "CPU"}]') from e
    if not isinstance(doc, list):
        raise ProviderSpecError(f"{flag}: must be a JSON list of providers, got {type(doc).__name__}")
    out: list[ProviderRequest] = []
    for i, item in enumerate(doc):
        what = f"{flag}[{i}]"
        if isinstance(item, str):
            out.append(ProviderRequest(ort_name(item, what)))
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            unknown = set(item) - {"name", "options"}
            if unknown:
                raise ProviderSpecError(f"{what}: unknown keys {sorted(unknown)} (an entry has name and options)")
            out.append(ProviderRequest(ort_name(item["name"], what), _options(item.get("options"), what)))
        else:
            raise ProviderSpecError(f"{what}: an entry is a name or an object with a string 'name'")
    return out


def parse_item(text: str, flag: str = "--execution-provider") -> ProviderRequest:
    """`CUDA` or `CUDA:device_id=0,gpu_mem_limit=2147483648`."""
    name, _, rest = text.partition(":")
    what = f"{flag} {text!r}"
    opts: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        if not eq or not k.strip():
            raise ProviderSpecError(f"{what}: option {part!r} is not key=value")
        opts[k.strip()] = v.strip()
    return ProviderRequest(ort_name(name, what), opts)


def ordered(requests: Iterable[ProviderRequest]) -> list[ProviderRequest]:
    """Each provider once (its first entry), the CPU last, added when not named."""
    seen: dict[str, ProviderRequest] = {}
    for r in requests:
        seen.setdefault(r.name, r)
    cpu = seen.pop(CPU, ProviderRequest(CPU))
    return [*seen.values(), cpu]


def with_cache(requests: Sequence[ProviderRequest], cache_dir: str | None, sha256: str) -> list[ProviderRequest]:
    """Point the compiling providers at `<cache_dir>/<kind>/<sha256>` unless their options already say."""
    if not cache_dir:
        return list(requests)
    out = []
    for r in requests:
        defaults = CACHE_OPTIONS.get(r.name)
        if defaults is None:
            out.append(r)
            continue
        filled = {k: (f"{cache_dir.rstrip('/')}/{v}/{sha256}" if k.endswith(("_path", "_dir")) else v)
                  for k, v in defaults.items()}
        out.append(ProviderRequest(r.name, {**filled, **r.options}))
    return out


def unavailable(requests: Sequence[ProviderRequest], available: Sequence[str]) -> dict[str, str]:
    """The requested providers this onnxruntime cannot run, each with the reason."""
    have = ", ".join(available)
    return {r.name: f"not in this onnxruntime build (it has {have})"
            for r in requests if r.name not in available and r.name != CPU}


def is_accelerator(name: str) -> bool:
    return name != CPU


__all__ = [
    "CPU",
    "ProviderRequest",
    "ProviderSpecError",
    "is_accelerator",
    "ordered",
    "ort_name",
    "parse_item",
    "parse_json",
    "unavailable",
    "with_cache",
]
