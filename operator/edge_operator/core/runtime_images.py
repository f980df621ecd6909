"""Which runtime image a device's Pod runs: one image per onnxruntime provider family.

Pure. onnxruntime ships one wheel per hardware family (`onnxruntime`, `onnxruntime-gpu`,
`onnxruntime-openvino`, `onnxruntime-rocm`, `onnxruntime-qnn`, `onnxruntime-cann`), and they all
install the same `onnxruntime` package, so one image holds exactly one of them: a CUDA device needs
the cuda image, an Intel GPU the openvino one. The operator is given an image per family (the cpu
one always); placement drives a device's accelerator only when its provider's family has an image,
otherwise the device gets the CPU build in the cpu image and its status row says why, so a missing
image never means a Pod that cannot start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from edgeai_api.enums import ExecutionProvider

EP = ExecutionProvider
CPU_FAMILY = "cpu"
# Provider -> the family whose onnxruntime build has it. TensorRT ships in onnxruntime-gpu with
# CUDA; MIGraphX in the ROCm build.
FAMILIES: Mapping[str, str] = {
    EP.CPU: CPU_FAMILY,
    EP.CUDA: "cuda",
    EP.TENSORRT: "cuda",
    EP.OPENVINO: "openvino",
    EP.ROCM: "rocm",
    EP.MIGRAPHX: "rocm",
    EP.QNN: "qnn",
    EP.CANN: "cann",
}
FAMILY_NAMES: tuple[str, ...] = tuple(dict.fromkeys(FAMILIES.values()))
# The operator's environment: EDGEAI_RUNTIME_IMAGE is the cpu image, EDGEAI_RUNTIME_IMAGE_<FAMILY> the others.
CPU_ENV = "EDGEAI_RUNTIME_IMAGE"
ENV_PREFIX = CPU_ENV + "_"
# An image reference: no whitespace, no scheme; registry/path[:tag][@sha256:...].
_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


class RuntimeImagesError(ValueError):
    """A runtime image setting that cannot be used; the message names the variable."""


def family(provider: str) -> str:
    """The family of an execution provider (its CRD short name); an unknown one is a family of its own."""
    return FAMILIES.get(provider, provider.lower())


def env_name(fam: str) -> str:
    return CPU_ENV if fam == CPU_FAMILY else f"{ENV_PREFIX}{fam.upper()}"


@dataclass(frozen=True)
class RuntimeImages:
    """The cpu image and, for the accelerator families that have one, theirs."""

    cpu: str
    families: tuple[tuple[str, str], ...] = ()  # (family, image), sorted by family; never cpu

    @staticmethod
    def of(cpu: str, families: Mapping[str, str] | None = None) -> RuntimeImages:
        return RuntimeImages(cpu, tuple(sorted((f, i) for f, i in (families or {}).items() if f != CPU_FAMILY)))

    @property
    def available(self) -> frozenset[str]:
        """The families a Pod can be given an image for."""
        return frozenset({CPU_FAMILY, *(f for f, _ in self.families)})

    def image(self, fam: str) -> str | None:
        if fam == CPU_FAMILY:
            return self.cpu
        return next((i for f, i in self.families if f == fam), None)

    def for_provider(self, provider: str) -> str:
        """The image of `provider`'s family; the cpu image when that family has none."""
        return self.image(family(provider)) or self.cpu


def from_env(environ: Mapping[str, str], default_cpu: str) -> RuntimeImages:
    """EDGEAI_RUNTIME_IMAGE (cpu) and EDGEAI_RUNTIME_IMAGE_<FAMILY> for each other family; empty means unset."""
    cpu = environ.get(CPU_ENV) or default_cpu
    out: dict[str, str] = {}
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or not value:
            continue
        fam = name.removeprefix(ENV_PREFIX).lower()
        if fam == CPU_FAMILY:
            raise RuntimeImagesError(f"{name}: the cpu family's image is {CPU_ENV}; set that instead")
        if fam not in FAMILY_NAMES:
            known = ", ".join(env_name(f) for f in FAMILY_NAMES if f != CPU_FAMILY)
            raise RuntimeImagesError(f"{name}: unknown runtime family {fam!r} (known: {known})")
        out[fam] = value.strip()
    for fam, image in {CPU_FAMILY: cpu, **out}.items():
        if not _IMAGE_REF.match(image) or "://" in image:
            raise RuntimeImagesError(f"{env_name(fam)}: {image!r} is not an image reference "
                                     "(registry/repository[:tag][@sha256:digest])")
    return RuntimeImages.of(cpu, out)


__all__ = ["CPU_FAMILY", "FAMILIES", "FAMILY_NAMES", "RuntimeImages", "RuntimeImagesError", "env_name",
           "family", "from_env"]
