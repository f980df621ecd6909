"""Execution providers per device: the build, the runtime's provider list, the device plugin's resource."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from edge_operator.core import revisions as rev
from edge_operator.core.acceleration import CPU_ONLY
from edge_operator.core.capabilities import from_node
from edge_operator.core.device_phase import DevicePhase, row
from edge_operator.core.manifests import Owner, WorkloadInputs, child_pod, surges
from edge_operator.core.placement import Artifact, Assignment, DeviceView, Requirements, place
from edgeai_api import constants as c
from edgeai_api.enums import WorkloadPhase
from edgeai_api.inferencedeployment import RuntimeSpec
from edgeai_api.serde import parse

SOURCE = Artifact("default", "fp32", "https://m/model.onnx", "b" * 64, accelerators=("cpu",), verified=True)
FP16 = Artifact("fp16", "fp16", "https://m/fp16.onnx", "d" * 64, accelerators=("gpu",), verified=True)
INT8 = Artifact("int8", "int8", "https://m/int8.onnx", "e" * 64, accelerators=("npu",), verified=True)


def device(name: str, alloc: dict[str, Any], labels: dict[str, str] | None = None) -> DeviceView:
    node = {"metadata": {"name": name, "labels": labels or {}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", **alloc}}}
    return DeviceView(name, name, {}, from_node(node))


GPU = device("gpu-0", {"nvidia.com/gpu": "1"})
ASCEND = device("npu-0", {"huawei.com/Ascend310": "1"})
IGPU = device("igpu-0", {"gpu.intel.com/i915": "1"})
CPU_DEV = device("cpu-0", {})


def runtime(doc: dict[str, Any] | None = None) -> RuntimeSpec:
    return parse(RuntimeSpec, doc or {}, "spec.runtime")


def placed(rt: RuntimeSpec | None, *devices: DeviceView) -> dict[str, Assignment]:
    return place(None, Requirements(), SOURCE, [FP16, INT8], devices, runtime=rt).by_device()


def inputs(a: Assignment, rt: RuntimeSpec | None = None) -> WorkloadInputs:
    return WorkloadInputs(namespace="ns", owner=Owner(c.API_VERSION, c.KIND_IDEP, "det", "u"), model="m",
                          model_version=None, device=a.device, node=a.node, artifact=a.artifact, image="img:1",
                          runtime=rt or RuntimeSpec(), acceleration=a.acceleration)


def manifest(a: Assignment, rt: RuntimeSpec | None = None) -> dict[str, Any]:
    return child_pod(inputs(a, rt))


def server(m: dict[str, Any]) -> dict[str, Any]:
    return m["spec"]["containers"][0]  # type: ignore[no-any-return]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_a_gpu_device_gets_the_fp16_build_cuda_and_one_gpu() -> None:
    a = placed(None, GPU)["gpu-0"]
    assert a.artifact.name == "fp16"
    assert a.acceleration.provider == "CUDA" and a.acceleration.resource == "nvidia.com/gpu"
    assert "CUDA on gpu through nvidia.com/gpu" in a.acceleration.reason
    ctr = server(manifest(a))
    assert json.loads(flag(ctr["args"], "--execution-providers") or "") == [{"name": "CUDA"}, {"name": "CPU"}]
    assert "--require-accelerator" not in ctr["args"]
    assert ctr["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    # One GPU, handed to one Pod: a surge Pod would wait forever for the unit its predecessor holds.
    assert not surges(inputs(a))


def test_other_vendors_get_their_provider_and_resource() -> None:
    by = placed(None, IGPU, ASCEND)
    assert (by["igpu-0"].acceleration.provider, by["igpu-0"].acceleration.resource) == (
        "OpenVINO", "gpu.intel.com/i915")
    assert by["igpu-0"].artifact.name == "fp16"
    assert (by["npu-0"].acceleration.provider, by["npu-0"].acceleration.resource) == ("CANN", "huawei.com/Ascend310")
    assert by["npu-0"].artifact.name == "int8"
    # OpenVINO compiles: its blobs go to the node's provider cache, mounted writable.
    m = manifest(by["igpu-0"])
    assert flag(server(m)["args"], "--provider-cache") == c.PROVIDER_CACHE_DIR
    assert {"name": "provider-cache", "mountPath": c.PROVIDER_CACHE_DIR} in server(m)["volumeMounts"]


def test_an_npu_device_with_no_provider_in_the_list_gets_the_cpu_build_and_a_reason() -> None:
    rt = runtime({"executionProviders": [{"name": "CUDA"}, {"name": "CPU"}]})
    by = placed(rt, ASCEND, GPU)
    a = by["npu-0"]
    assert a.artifact.name == "default" and a.artifact.precision == "fp32"
    assert a.acceleration.provider == "CPU" and a.acceleration.resource is None
    assert "npu (huawei.com/Ascend310): no entry of spec.runtime.executionProviders drives it (CANN would)" in (
        a.acceleration.reason)
    ctr = server(manifest(a, rt))
    assert "--execution-providers" not in ctr["args"] and "limits" not in ctr["resources"]
    # The GPU device of the same deployment runs on CUDA.
    assert by["gpu-0"].acceleration.provider == "CUDA"


def test_the_spec_list_is_kept_in_order_with_its_options_and_a_persons_limit_wins() -> None:
    rt = runtime({"executionProviders": [{"name": "TensorRT", "options": {"trt_fp16_enable": "True"}},
                                         {"name": "CUDA", "options": {"device_id": "0"}}, {"name": "OpenVINO"}],
                  "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "1Gi"}}})
    a = placed(rt, GPU)["gpu-0"]
    assert a.acceleration.provider == "TensorRT"
    ctr = server(manifest(a, rt))
    assert json.loads(flag(ctr["args"], "--execution-providers") or "") == [
        {"name": "TensorRT", "options": {"trt_fp16_enable": "True"}},
        {"name": "CUDA", "options": {"device_id": "0"}}, {"name": "CPU"}]
    assert flag(ctr["args"], "--provider-cache") == c.PROVIDER_CACHE_DIR
    assert ctr["resources"]["limits"] == {"memory": "1Gi", "nvidia.com/gpu": "2"}


def test_require_accelerator_leaves_cpu_devices_unplaced_and_tells_the_runtime() -> None:
    rt = runtime({"requireAccelerator": True})
    p = place(None, Requirements(), SOURCE, [FP16], [CPU_DEV, GPU], runtime=rt)
    assert [a.device for a in p.assignments] == ["gpu-0"]
    (rej,) = p.rejections
    assert rej.device == "cpu-0" and rej.reason == "NoExecutionProvider" and "requireAccelerator" in rej.message
    assert "--require-accelerator" in server(manifest(p.assignments[0], rt))["args"]


def test_a_cpu_device_runs_the_manifest_it_ran_before() -> None:
    a = placed(None, CPU_DEV)["cpu-0"]
    assert a.artifact.name == "default" and a.acceleration.provider == "CPU"
    assert manifest(a) == manifest(replace(a, acceleration=CPU_ONLY))
    assert manifest(placed(runtime({"executionProviders": [{"name": "CUDA"}]}), CPU_DEV)["cpu-0"]) == manifest(
        replace(a, acceleration=CPU_ONLY))


def test_a_label_only_npu_keeps_its_int8_build_on_the_cpu_and_says_why() -> None:
    # No vendor known and no provider list: the build is chosen as before, run on the CPU, with a reason.
    a = placed(None, device("npu-1", {}, {"edgeai.io/accelerator": "npu"}))["npu-1"]
    assert a.artifact.name == "int8" and a.acceleration.provider == "CPU"
    assert "no default execution provider drives it" in a.acceleration.reason


def test_the_status_row_says_which_provider() -> None:
    a = placed(None, GPU)["gpu-0"]
    r = row("gpu-0", "fp16", "d" * 64, DevicePhase(WorkloadPhase.READY, True, True),
            provider=a.acceleration.provider, acceleration=a.acceleration.reason)
    assert r["executionProvider"] == "CUDA" and r["acceleration"].startswith("CUDA on gpu")


def test_changing_the_providers_makes_a_new_revision() -> None:
    t = rev.Template(model="m", model_version=None, source=SOURCE, variants=(FP16,), public_key=None,
                     decryption_key=None, runtime=runtime({"threads": 2}))
    t2 = replace(t, runtime=runtime({"threads": 2, "executionProviders": [{"name": "CUDA"}]}))
    t3 = replace(t, runtime=runtime({"threads": 2, "requireAccelerator": True}))
    assert len({t.hash(), t2.hash(), t3.hash()}) == 3
    assert rev.Template.from_dict(t2.to_dict()) == t2
