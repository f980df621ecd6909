"""Which onnxruntime execution providers a device runs its build on, and which device it asks for.

Pure. A device's accelerators come from `capabilities` (the device-plugin resources its Node
advertises, or a label / `spec.capabilities` that names only the kind). An execution provider
drives hardware of one kind and vendor: CUDA and TensorRT an NVIDIA GPU, OpenVINO an Intel GPU
or VPU, CANN an Ascend NPU... `usable` says which of a device's accelerators the deployment's
provider list (or, when the spec gives none, the default list) can drive, so placement never
picks an fp16/int8 build for hardware nothing will run it on; `plan` then gives the device its
list (the entries that drive its hardware, the CPU last), the device-plugin resource its Pod
asks for, and a sentence saying why. `families` (the provider families the operator has a runtime
image for, core/runtime_images.py) narrows both: a provider whose family has no image is never
chosen, since the image a Pod runs carries one onnxruntime build only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_operator.core.capabilities import ACCELERATOR_RESOURCES, RESOURCE_VENDORS, Capabilities
from edge_operator.core.runtime_images import env_name, family
from edgeai_api.enums import PROVIDER_DRIVES, Accelerator, ExecutionProvider
from edgeai_api.inferencedeployment import ExecutionProviderSpec, RuntimeSpec

EP = ExecutionProvider
# What each provider drives: (accelerator kind, vendor); in the API, as `pack --push` annotates with it too.
DRIVES = PROVIDER_DRIVES
# The default list for hardware, when the spec names none (TensorRT only when asked for: it
# compiles an engine per model and GPU, minutes on a small device).
DEFAULTS: Mapping[tuple[str, str | None], tuple[str, ...]] = {
    ("gpu", "nvidia"): (EP.CUDA,),
    ("gpu", "amd"): (EP.MIGRAPHX,),
    ("gpu", "intel"): (EP.OPENVINO,),
    ("vpu", "intel"): (EP.OPENVINO,),
    ("npu", "huawei"): (EP.CANN,),
    ("npu", "qualcomm"): (EP.QNN,),
    # Known by a label only: the common case of the kind.
    ("gpu", None): (EP.CUDA,),
    ("vpu", None): (EP.OPENVINO,),
}
# Providers that compile the model and keep the result on the node's provider cache.
COMPILING = frozenset({EP.TENSORRT, EP.OPENVINO})


@dataclass(frozen=True)
class Hardware:
    kind: str
    vendor: str | None = None  # None: known by a label or spec.capabilities only
    resource: str | None = None  # the device plugin's extended resource, when one is advertised

    def describe(self) -> str:
        return f"{self.kind} ({self.resource})" if self.resource else self.kind


@dataclass(frozen=True)
class Acceleration:
    """What one device runs its build on."""

    provider: str = EP.CPU  # the first provider of the list: what the device was placed for
    providers: tuple[ExecutionProviderSpec, ...] = ()  # () = the runtime's default, the CPU alone
    resource: str | None = None  # extended resource the Pod's limits ask one of
    require: bool = False
    reason: str = ""

    @property
    def on_accelerator(self) -> bool:
        return self.provider != EP.CPU

    @property
    def compiles(self) -> bool:
        return any(p.name in COMPILING for p in self.providers)

    def flag(self) -> str | None:
        """The value of the runtime's --execution-providers, or None when the CPU alone will do."""
        if not self.providers:
            return None
        return json.dumps([{"name": str(p.name), **({"options": dict(sorted(p.options.items()))} if p.options
                                                   else {})} for p in self.providers], separators=(",", ":"))


CPU_ONLY = Acceleration()


def hardware(caps: Capabilities) -> dict[str, tuple[Hardware, ...]]:
    """A device's accelerators by kind, each with its vendor and resource where the Node says."""
    out: dict[str, tuple[Hardware, ...]] = {}
    for kind in caps.accelerators:
        if kind == Accelerator.CPU:
            continue
        found = tuple(Hardware(kind, RESOURCE_VENDORS.get(r), r) for r in caps.resources
                      if ACCELERATOR_RESOURCES.get(r) == kind)
        out[kind] = found or (Hardware(kind),)
    return out


def drives(provider: str, hw: Hardware) -> bool:
    return any(k == hw.kind and (hw.vendor is None or v == hw.vendor) for k, v in DRIVES.get(provider, ()))


def _listed(runtime: RuntimeSpec | None) -> tuple[ExecutionProviderSpec, ...] | None:
    return runtime.execution_providers if runtime is not None and runtime.execution_providers else None


def _drivers(hw: Hardware, listed: tuple[ExecutionProviderSpec, ...] | None) -> list[ExecutionProviderSpec]:
    if listed is not None:
        return [p for p in listed if drives(p.name, hw)]
    return [ExecutionProviderSpec(name=EP(n)) for n in DEFAULTS.get((hw.kind, hw.vendor), ())]


def _candidates(hw: Hardware, listed: tuple[ExecutionProviderSpec, ...] | None,
                families: frozenset[str] | None) -> list[ExecutionProviderSpec]:
    """The providers that drive `hw` and have a runtime image, all of the first one's family: one image
    holds one onnxruntime build, where another family's provider is never there to start."""
    ok = [p for p in _drivers(hw, listed) if families is None or family(p.name) in families]
    return [p for p in ok if family(p.name) == family(ok[0].name)] if ok else []


def _why_not(hw: Hardware, listed: tuple[ExecutionProviderSpec, ...] | None) -> str:
    drivers = _drivers(hw, listed)
    if drivers:  # they drive it, but no family of theirs has an image
        fams = list(dict.fromkeys(family(p.name) for p in drivers))
        return (f"{hw.describe()}: {', '.join(str(p.name) for p in drivers)} would drive it, but the operator has "
                f"no runtime image for the {' or '.join(fams)} family (set "
                f"{' or '.join(env_name(f) for f in fams)}; chart: runtime.images.{fams[0]})")
    would = [str(p) for p, pairs in DRIVES.items() if any(k == hw.kind and (hw.vendor in (None, v))
                                                          for k, v in pairs)]
    if listed is not None and would:
        return (f"{hw.describe()}: no entry of spec.runtime.executionProviders drives it "
                f"({', '.join(would)} would)")
    if listed is not None:
        return f"{hw.describe()}: no onnxruntime execution provider drives it"
    return f"{hw.describe()}: no default execution provider drives it; name one in spec.runtime.executionProviders"


def usable(caps: Capabilities, runtime: RuntimeSpec | None,
           families: frozenset[str] | None = None) -> tuple[frozenset[str], tuple[str, ...]]:
    """The device's accelerator kinds a build may be chosen for, and why each kind no provider drives is not run
    on its hardware.

    With spec.runtime.executionProviders, only the kinds an entry drives: the others get the CPU build. Without
    it every kind, as before providers were chosen: a build for hardware no default provider drives (a Rockchip
    NPU, a TPU) still runs, on the CPU, and the reason says so. A kind whose providers' families have no
    runtime image (`families`; None: every family has one) is never usable: the CPU build in the cpu image.
    """
    listed = _listed(runtime)
    ok: set[str] = set()
    notes: list[str] = []
    for kind, hws in hardware(caps).items():
        if any(_candidates(hw, listed, families) for hw in hws):
            ok.add(kind)
            continue
        notes.append("; ".join(_why_not(hw, listed) for hw in hws))
        if listed is None and not any(_drivers(hw, listed) for hw in hws):
            ok.add(kind)
    return frozenset(ok), tuple(notes)


def plan(caps: Capabilities, accelerator: str, runtime: RuntimeSpec | None,
         notes: Sequence[str] = (), families: frozenset[str] | None = None) -> Acceleration:
    """The providers, resource and reason of a device whose build was chosen for `accelerator`."""
    listed = _listed(runtime)
    require = bool(runtime is not None and runtime.require_accelerator)
    cpu = next((p for p in listed or () if p.name == EP.CPU), None)
    cpu_list = (cpu,) if cpu is not None and cpu.options else ()
    for hw in hardware(caps).get(accelerator, ()):
        chosen = _candidates(hw, listed, families)
        if not chosen:
            continue
        first = chosen[0]
        via = f" through {hw.resource}" if hw.resource else " (no device-plugin resource advertised: none requested)"
        return Acceleration(
            provider=first.name,
            providers=(*chosen, cpu or ExecutionProviderSpec(name=EP.CPU)),
            resource=hw.resource,
            require=require,
            reason=f"{first.name} on {hw.kind}{via}" + "".join(f"; {n}" for n in notes),
        )
    reason = "; ".join(notes) if notes else ("no accelerator" if accelerator == Accelerator.CPU else "")
    return Acceleration(providers=cpu_list, reason=f"CPU: {reason}" if reason else "CPU")


def placement_key(runtime: RuntimeSpec | None) -> str:
    """What of the runtime settings placement depends on, as a cache key."""
    listed = _listed(runtime)
    return json.dumps([[str(p.name), sorted((p.options or {}).items())] for p in listed or ()]
                      + [bool(runtime and runtime.require_accelerator)])


__all__ = ["CPU_ONLY", "Acceleration", "Hardware", "hardware", "placement_key", "plan", "usable"]
