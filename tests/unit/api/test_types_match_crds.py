"""The typed CRDs in edgeai_api are held to crds/*.yaml, field by field, both ways.

A property added to a schema and not to its dataclass (or the other way round), a type that
disagrees, an enum whose values drifted or a required field typed optional fails here. Then
parse(serialize(x)) == x on the examples and on the objects the operator's unit tests build.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_operator.core import planner
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.status import ArtifactCheck, ModelCheck, device_status, model_status
from edge_operator.core.views import child_info, device_info, idep_info, model_info, node_info
from edgeai_api import edgedevice, edgemodel, inferencedeployment, serde
from edgeai_api.serde import ApiTypeError
from tests.unit.operator.core import test_planner as tp
from tests.unit.operator.core import test_planner_rollout as tpr

ROOT = Path(__file__).resolve().parents[3]
KINDS: dict[str, type] = {
    "EdgeModel": edgemodel.EdgeModel,
    "EdgeDevice": edgedevice.EdgeDevice,
    "InferenceDeployment": inferencedeployment.InferenceDeployment,
}
CRD_FILES = {"EdgeModel": "edgemodel.yaml", "EdgeDevice": "edgedevice.yaml",
             "InferenceDeployment": "inferencedeployment.yaml"}
SCALARS: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}


def schema(kind: str) -> Mapping[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / CRD_FILES[kind]).read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def optional(f: dataclasses.Field[Any], tp: Any) -> bool:
    return not serde.is_required(f) or serde.strip_optional(tp)[1]


def check(node: Mapping[str, Any], tp: Any, path: str, errors: list[str]) -> None:
    """Append to `errors` every way `tp` disagrees with the schema `node`."""
    tp, _ = serde.strip_optional(tp)
    if node.get("x-kubernetes-int-or-string"):
        if set(serde.union_args(tp) or ()) != {int, str}:
            errors.append(f"{path}: int-or-string in the schema, {tp} in the type")
        return
    kind = node.get("type")
    origin = typing.get_origin(tp)
    if kind in SCALARS:
        is_enum = isinstance(tp, type) and issubclass(tp, enum.Enum)
        if "enum" in node or is_enum:
            if not is_enum:
                errors.append(f"{path}: the schema has enum {node['enum']}, the type is {tp}")
            elif "enum" not in node:
                errors.append(f"{path}: {tp.__name__} is an enum, the schema has none")
            elif {str(m.value) for m in tp} != {str(v) for v in node["enum"]}:
                errors.append(f"{path}: {tp.__name__} values {sorted(m.value for m in tp)} != schema "
                              f"{sorted(node['enum'])}")
            return
        if tp is not SCALARS[kind]:
            errors.append(f"{path}: {kind} in the schema, {tp} in the type")
        return
    if kind == "array":
        if origin is not tuple:
            errors.append(f"{path}: array in the schema, {tp} in the type")
            return
        check(node["items"], typing.get_args(tp)[0], f"{path}[]", errors)
        return
    if kind != "object":
        errors.append(f"{path}: unknown schema node {node}")
        return
    if "additionalProperties" in node:
        if origin is None or not issubclass(origin, Mapping):
            errors.append(f"{path}: a map in the schema, {tp} in the type")
            return
        check(node["additionalProperties"], typing.get_args(tp)[1], f"{path}.*", errors)
        return
    if not dataclasses.is_dataclass(tp):
        errors.append(f"{path}: an object with properties in the schema, {tp} in the type")
        return
    hints = serde.hints(tp)  # type: ignore[arg-type]
    props: Mapping[str, Any] = node.get("properties") or {}
    required = set(node.get("required") or ())
    by_name = {serde.json_name(f): f for f in dataclasses.fields(tp) if not serde.is_extra(f)}
    extra = [f for f in dataclasses.fields(tp) if serde.is_extra(f)]
    if bool(extra) != bool(node.get("x-kubernetes-preserve-unknown-fields")):
        errors.append(f"{path}: an `extra` field exactly where the schema preserves unknown fields")
    for name in sorted(set(props) - set(by_name)):
        errors.append(f"{path}.{name}: in the schema, not in {tp.__name__}".lstrip("."))
    for name in sorted(set(by_name) - set(props)):
        errors.append(f"{path}.{name}: in {tp.__name__}, not in the schema".lstrip("."))
    for name in sorted(set(props) & set(by_name)):
        f = by_name[name]
        sub = f"{path}.{name}" if path else name
        if name == "metadata" and not path:
            continue  # the API server's ObjectMeta, always there: the schema leaves it untyped
        if (name in required) == optional(f, hints[f.name]):
            errors.append(f"{sub}: {'required' if name in required else 'optional'} in the schema, "
                          f"not in {tp.__name__}")
        check(props[name], hints[f.name], sub, errors)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_types_match_the_crd_schema(kind: str) -> None:
    errors: list[str] = []
    check(schema(kind), KINDS[kind], "", errors)
    assert errors == []


def test_the_checker_sees_a_drift() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Drifted:
        model: int
        extra_field: str | None = None

    errors: list[str] = []
    node = schema("InferenceDeployment")["properties"]["spec"]
    check(node, Drifted, "spec", errors)
    assert any("spec.extraField: in Drifted, not in the schema" in e for e in errors)
    assert any("spec.deviceSelector: in the schema, not in Drifted" in e for e in errors)
    assert any("spec.model: string in the schema" in e for e in errors)


# --------------------------------------------------------------------------- round trips


def roundtrip(cls: type, data: Mapping[str, Any]) -> None:
    x = serde.parse(cls, data)
    assert serde.parse(cls, serde.serialize(x)) == x
    # Nothing the operator writes is lost: unset means absent, never a default filled in.
    assert serde.serialize(x) == {k: v for k, v in data.items() if v is not None}


def example_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") in KINDS:
                out.append((f.name, doc))
    return out


@pytest.mark.parametrize(("name", "obj"), example_objects(), ids=[n for n, _ in example_objects()])
def test_examples_round_trip(name: str, obj: dict[str, Any]) -> None:
    x = serde.parse(KINDS[obj["kind"]], obj)
    assert serde.parse(KINDS[obj["kind"]], serde.serialize(x)) == x
    assert serde.serialize(x)["spec"] == obj["spec"]


def test_specs_the_unit_tests_build_round_trip() -> None:
    roundtrip(edgemodel.EdgeModelSpec, tp.model_body()["spec"])
    roundtrip(inferencedeployment.InferenceDeploymentSpec, tp.idep_body({"matchLabels": {"a": "b"}})["spec"])
    roundtrip(inferencedeployment.InferenceDeploymentSpec, tpr.idep({}, tpr.ROLLOUT)["spec"])
    roundtrip(edgedevice.EdgeDeviceSpec, {"nodeName": "n", "capabilities": {"accelerators": ["npu"], "memory": 2}})


def test_statuses_the_operator_writes_round_trip() -> None:
    k = tpr.Cluster()
    k.until(tpr.model(), tpr.ROLLOUT, "Complete")
    k.until(tpr.model(tpr.NEW), tpr.ROLLOUT, "Complete")
    roundtrip(inferencedeployment.InferenceDeploymentStatus, k.status)
    st = k.status
    assert st["rollout"]["phase"] == "Complete" and len(st["revisions"]) == 2
    parsed = serde.parse(inferencedeployment.InferenceDeploymentStatus, st)
    assert parsed.revisions is not None and "template" in parsed.revisions[0].extra

    blocked = planner.plan(idep_info(tp.idep_body()), None, {}, {}, {}, images=RuntimeImages("img"), now=tp.NOW).status
    roundtrip(inferencedeployment.InferenceDeploymentStatus, blocked)

    m = model_info(tp.model_body())
    check_ = ModelCheck(ArtifactCheck("default", True, tp.SRC, 10),
                        (ArtifactCheck("int8", False, "c" * 64, 9, "DigestMismatch", "x"),),
                        inputs=({"name": "x", "datatype": "FP32", "shape": [-1, 3]},), outputs=())
    roundtrip(edgemodel.EdgeModelStatus, model_status(m, check_, tp.NOW))

    node = node_info({"metadata": {"name": "n", "uid": "u", "labels": {"node-role.kubernetes.io/edge": ""}},
                      "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                 "allocatable": {"memory": "4Gi", "cpu": "2"}}})
    dev = device_info({"metadata": {"name": "n"}, "spec": {"nodeName": "n"}})
    manifest = tp.run(tp.idep_body(), tp.model_body()).apply[0]
    child = child_info(dict(manifest, status={}))
    assert child is not None
    roundtrip(edgedevice.EdgeDeviceStatus, device_status(dev, node, [child], tp.NOW, 60.0))


@pytest.mark.parametrize(("cls", "data", "message"), [
    (inferencedeployment.RolloutSpec, {"waves": [1, 1.5]},
     "spec.rollout.waves[1]: expected integer or percent string, got 1.5"),
    (inferencedeployment.RolloutSpec, {"onFailure": "Explode"},
     "spec.rollout.onFailure: expected one of Rollback, Pause, got 'Explode'"),
    (inferencedeployment.RolloutSpec, {"healthGate": {"readySeconds": True}},
     "spec.rollout.healthGate.readySeconds: expected integer, got True"),
    (inferencedeployment.RolloutSpec, {"rollbackTo": {}}, "spec.rollout.rollbackTo.revision: required"),
    (inferencedeployment.RolloutSpec, [], "spec.rollout: expected object, got []"),
])
def test_a_bad_field_is_named_by_its_path(cls: type, data: object, message: str) -> None:
    with pytest.raises(ApiTypeError) as e:
        serde.parse(cls, data, "spec.rollout")
    assert str(e.value) == message
