"""Which devices run a model, and which build of it each one gets.

Pure: `place()` takes the selector, the model's requirements and verified
builds, and the device catalogue, and returns one assignment per chosen
device plus, for every device not chosen, a reason a person can act on.
No I/O, so every rule here is unit-tested and the kopf handlers stay thin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_operator.core import acceleration
from edge_operator.core.acceleration import CPU_ONLY, Acceleration
from edge_operator.core.capabilities import Capabilities
from edge_operator.core.quantity import QuantityError, format_bytes, quantity_bytes
from edge_operator.core.selectors import matches
from edgeai_api.edgemodel import SOURCE_BUILD, ModelRequirements
from edgeai_api.enums import Accelerator, Precision, UnplacedReason
from edgeai_api.inferencedeployment import RuntimeSpec

PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)
# The build each accelerator runs best: NPUs and TPUs are integer engines, GPUs and VPUs do fp16.
PREFERRED_PRECISION: Mapping[str, str] = {"npu": "int8", "tpu": "int8", "gpu": "fp16", "vpu": "fp16"}
# Order in which a device's accelerators are tried: the most specialised first.
ACCELERATOR_ORDER = ("npu", "tpu", "gpu", "vpu")
DEFAULT_BUILD = SOURCE_BUILD


@dataclass(frozen=True)
class Artifact:
    """One build of a model: `spec.source` (named "default") or one of `spec.variants[]`."""

    name: str
    precision: str
    uri: str
    sha256: str
    size: int | None = None
    signature: str | None = None  # format digest: base64 signature over sha256
    bundle: str | None = None  # format openssf: the bundle (JSON) whose manifest lists sha256
    accelerators: tuple[str, ...] = ()
    verified: bool = False
    reason: str = ""  # why it is not verified, when it is not
    # oci:// builds: spec.registry, which the fetch init container needs to reach the registry
    pull_secret: str | None = None  # a kubernetes.io/dockerconfigjson Secret
    plain_http: bool = False


@dataclass(frozen=True)
class Requirements:
    arch: tuple[str, ...] = ()
    min_memory: str | None = None
    accelerators: tuple[str, ...] = ()

    @staticmethod
    def from_spec(spec: ModelRequirements | None) -> Requirements:
        if spec is None:
            return Requirements()
        return Requirements(
            arch=tuple(spec.arch or ()),
            min_memory=str(spec.min_memory) if spec.min_memory is not None else None,
            accelerators=tuple(spec.accelerators or ()),
        )


@dataclass(frozen=True)
class DeviceView:
    """A device as placement sees it: EdgeDevice joined with its Node."""

    name: str
    node_name: str
    labels: Mapping[str, str]
    capabilities: Capabilities
    node_exists: bool = True
    online: bool = True
    deleting: bool = False


@dataclass(frozen=True)
class Assignment:
    device: str
    node: str
    artifact: Artifact
    why: str
    acceleration: Acceleration = CPU_ONLY  # the execution providers and device-plugin resource it runs on


@dataclass(frozen=True)
class Rejection:
    device: str
    reason: str  # CamelCase, stable: NotSelected, ArchMismatch, InsufficientMemory, ...
    message: str


@dataclass(frozen=True)
class Placement:
    assignments: tuple[Assignment, ...]
    rejections: tuple[Rejection, ...]  # selected but unsuitable (the unselected are only counted)
    selected: int
    not_selected: int = 0  # devices of the fleet the selector does not match
    notes: tuple[str, ...] = field(default=())

    def by_device(self) -> dict[str, Assignment]:
        return {a.device: a for a in self.assignments}


@dataclass(frozen=True)
class VariantChoice:
    artifact: Artifact
    why: str
    accelerator: str = Accelerator.CPU  # what the build was chosen for


def _rank(precision: str) -> int:
    return PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS)


def choose_variant(caps: Capabilities, source: Artifact, variants: Iterable[Artifact],
                   drivable: frozenset[str] | None = None) -> VariantChoice:
    """The best verified build for a device: int8 on an NPU, fp16 on a GPU, fp32 otherwise.

    Only the accelerators in `drivable` (those an execution provider will run the build on; all of
    the device's when None) are built for: the others get the CPU build.

    A variant whose verification failed is never chosen; the choice falls back
    to the next best build and says so, so one bad upload degrades a device
    to a slower build rather than leaving it without a model.
    """
    variants = list(variants)
    skipped = [v for v in variants if not v.verified]
    usable = [v for v in variants if v.verified]

    def note(accel: str) -> str:
        bad = [v for v in skipped if accel in v.accelerators]
        if not bad:
            return ""
        return "; skipped unverified " + ", ".join(
            f"{v.name} ({v.reason or 'not verified yet'})" for v in sorted(bad, key=lambda v: v.name)
        )

    for accel in ACCELERATOR_ORDER:
        if accel not in caps.accelerators or (drivable is not None and accel not in drivable):
            continue
        suited = [v for v in usable if accel in v.accelerators]
        if not suited:
            continue
        pref = PREFERRED_PRECISION[accel]
        suited.sort(key=lambda v: (v.precision != pref, _rank(v.precision), v.name))
        best = suited[0]
        return VariantChoice(best, f"{best.precision} build {best.name!r} for {accel}{note(accel)}", accel)
    cpu = [v for v in usable
           if v.precision == Precision.FP32 and (Accelerator.CPU in v.accelerators or not v.accelerators)]
    extra = "".join(note(a) for a in ACCELERATOR_ORDER if a in caps.accelerators)
    if cpu:
        best = sorted(cpu, key=lambda v: v.name)[0]
        return VariantChoice(best, f"fp32 build {best.name!r} for cpu{extra}")
    return VariantChoice(source, f"default build for cpu{extra}")


def check_requirements(
    device: DeviceView, req: Requirements, memory_request: int | None
) -> Rejection | None:
    """Why `device` cannot run the model, or None if it can."""
    caps = device.capabilities
    if device.deleting:
        return Rejection(device.name, UnplacedReason.DEVICE_DELETING, "the EdgeDevice is being deleted")
    if not device.node_exists:
        return Rejection(device.name, UnplacedReason.NODE_NOT_FOUND, f"node {device.node_name!r} does not exist")
    if req.arch and caps.arch not in req.arch:
        return Rejection(
            device.name,
            UnplacedReason.ARCH_MISMATCH,
            f"model needs arch {'/'.join(req.arch)}, device is {caps.arch or 'unknown'}",
        )
    if req.accelerators and not set(req.accelerators) & set(caps.accelerators):
        return Rejection(
            device.name,
            UnplacedReason.NO_ACCELERATOR,
            f"model needs one of {', '.join(req.accelerators)}, device has {', '.join(caps.accelerators)}",
        )
    need: list[tuple[int, str]] = []
    if req.min_memory is not None:
        # The CRD pattern rejects a bad quantity; ignore one written before it did.
        with contextlib.suppress(QuantityError):
            need.append((quantity_bytes(req.min_memory), "model needs"))
    if memory_request is not None:
        need.append((memory_request, "workload requests"))
    if need:
        have = caps.memory_bytes
        for amount, who in need:
            if have is None:
                return Rejection(
                    device.name, UnplacedReason.UNKNOWN_MEMORY,
                    f"{who} {format_bytes(amount)} memory, device reports none",
                )
            if have < amount:
                return Rejection(
                    device.name,
                    UnplacedReason.INSUFFICIENT_MEMORY,
                    f"{who} {format_bytes(amount)} memory, device has {format_bytes(have)}",
                )
    return None


def place(
    selector: Mapping[str, Any] | None,
    requirements: Requirements,
    source: Artifact,
    variants: Iterable[Artifact],
    devices: Iterable[DeviceView],
    memory_request: int | None = None,
    fleet_size: int | None = None,
    runtime: RuntimeSpec | None = None,
    families: frozenset[str] | None = None,
) -> Placement:
    """Choose devices and builds; assignments and rejections sorted by device name.

    `devices` may be the whole fleet or only the candidates a label index found for the
    selector (then `fleet_size` is the whole fleet's size, for the not-selected count).
    `runtime` (spec.runtime) says which execution providers may run the builds: a device gets an
    accelerator's build only when one of them drives it, and `families` (the provider families the
    operator has a runtime image for; None: all) has that provider's family. O(devices given)."""
    variants = tuple(variants)
    assignments: list[Assignment] = []
    rejections: list[Rejection] = []
    selected = 0
    looked_at = 0
    for d in devices:
        looked_at += 1
        if not matches(selector, d.labels):
            # Counted, not listed: a Rejection per unselected device, kept in every deployment's
            # placement, was deployments x fleet objects (at 10,000 one-device deployments, most of
            # the operator's memory), and the status only ever counts them (`notSelected`).
            continue
        selected += 1
        rej = check_requirements(d, requirements, memory_request)
        if rej is not None:
            rejections.append(rej)
            continue
        usable, notes = acceleration.usable(d.capabilities, runtime, families)
        if runtime is not None and runtime.require_accelerator and not usable:
            why = "; ".join(notes) or f"the device has no accelerator (it has {', '.join(d.capabilities.accelerators)})"
            rejections.append(Rejection(d.name, UnplacedReason.NO_EXECUTION_PROVIDER,
                                        f"spec.runtime.requireAccelerator: {why}"))
            continue
        choice = choose_variant(d.capabilities, source, variants, usable)
        accel = acceleration.plan(d.capabilities, choice.accelerator, runtime, notes, families)
        assignments.append(Assignment(d.name, d.node_name, choice.artifact, choice.why, accel))
    assignments.sort(key=lambda a: a.device)
    rejections.sort(key=lambda r: r.device)
    total = fleet_size if fleet_size is not None else looked_at
    return Placement(tuple(assignments), tuple(rejections), selected, max(0, total - selected))
