"""Group overrides of runtime settings: what `spec.runtimeOverrides` changes for one device.

Pure. An override names devices by a label selector (as `spec.deviceSelector` does) and the
runtime settings they get instead of `spec.runtime`'s: e.g. a larger `maxLatencyMs` for the
sites with slower hardware, without a second InferenceDeployment. Overrides apply in order and
each replaces only the settings it sets, so a later override wins over an earlier one.
Overrides never change placement (the schema keeps providers, resources and ports out of them),
so a device's build and provider are the same with or without them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from edge_operator.core.selectors import matches, validate_selector
from edgeai_api.inferencedeployment import RuntimeOverride, RuntimeSpec
from edgeai_api.serde import serialize


@dataclasses.dataclass(frozen=True)
class CompiledOverride:
    selector: Mapping[str, Any]  # the selector as JSON, as `selectors.matches` reads it
    changes: Mapping[str, Any]  # RuntimeSpec field -> value, only the settings the override sets


def compile_overrides(overrides: Sequence[RuntimeOverride]) -> tuple[CompiledOverride, ...]:
    """Each override as a selector and the changes it makes; ValueError naming a bad selector."""
    out = []
    for i, o in enumerate(overrides):
        selector = dict(serialize(o.device_selector))
        validate_selector(selector, f"spec.runtimeOverrides[{i}].deviceSelector")
        changes = {f.name: getattr(o.runtime, f.name) for f in dataclasses.fields(o.runtime)
                   if getattr(o.runtime, f.name) is not None}
        out.append(CompiledOverride(selector, changes))
    return tuple(out)


def runtime_for(base: RuntimeSpec, overrides: Sequence[CompiledOverride], labels: Mapping[str, str]) -> RuntimeSpec:
    """The runtime settings of a device with these labels."""
    rt = base
    for o in overrides:
        if o.changes and matches(o.selector, labels):
            rt = dataclasses.replace(rt, **o.changes)
    return rt
