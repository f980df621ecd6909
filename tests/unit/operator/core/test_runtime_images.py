"""One runtime image per provider family: the mapping, the operator's settings, placement and the Pods."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_operator.core import planner
from edge_operator.core import revisions as rev
from edge_operator.core.runtime_images import FAMILIES, RuntimeImages, RuntimeImagesError, family, from_env
from edge_operator.core.views import idep_info, model_info
from edgeai_api import constants as c
from edgeai_api.enums import ExecutionProvider
from tests.unit.operator.core.test_acceleration import (
    ASCEND,
    CPU_DEV,
    FP16,
    GPU,
    IGPU,
    INT8,
    SOURCE,
    device,
    flag,
    runtime,
    server,
)
from tests.unit.operator.core.test_placement import Requirements, place

CUDA_ONLY = frozenset({"cpu", "cuda"})
IMAGES = RuntimeImages.of("reg/rt:1", {"cuda": "reg/rt-cuda:1", "openvino": "reg/rt-openvino:1"})


def test_every_provider_has_a_family_and_the_wheels_that_share_one_share_it() -> None:
    assert set(FAMILIES) == set(ExecutionProvider)
    assert family("CUDA") == family("TensorRT") == "cuda"  # onnxruntime-gpu has both
    assert family("ROCm") == family("MIGraphX") == "rocm"
    assert (family("OpenVINO"), family("QNN"), family("CANN"), family("CPU")) == ("openvino", "qnn", "cann", "cpu")


def test_images_come_from_the_environment_one_variable_per_family() -> None:
    env = {"EDGEAI_RUNTIME_IMAGE": "reg/rt:1", "EDGEAI_RUNTIME_IMAGE_CUDA": "reg/rt-cuda:1",
           "EDGEAI_RUNTIME_IMAGE_OPENVINO": "reg/rt-openvino@sha256:" + "a" * 64, "EDGEAI_RUNTIME_IMAGE_QNN": "",
           "PATH": "/bin"}
    images = from_env(env, "default:0")
    assert images.cpu == "reg/rt:1" and images.available == {"cpu", "cuda", "openvino"}
    assert images.for_provider("TensorRT") == "reg/rt-cuda:1"
    assert images.for_provider("QNN") == "reg/rt:1"  # set but empty: unset, so the cpu image
    assert from_env({}, "default:0") == RuntimeImages("default:0")


@pytest.mark.parametrize(("env", "says"), [
    ({"EDGEAI_RUNTIME_IMAGE_VULKAN": "r/v:1"},
     "EDGEAI_RUNTIME_IMAGE_VULKAN: unknown runtime family 'vulkan' (known: EDGEAI_RUNTIME_IMAGE_CUDA,"),
    ({"EDGEAI_RUNTIME_IMAGE_CPU": "r/c:1"}, "the cpu family's image is EDGEAI_RUNTIME_IMAGE"),
    ({"EDGEAI_RUNTIME_IMAGE_CUDA": "reg/rt cuda:1"}, "EDGEAI_RUNTIME_IMAGE_CUDA: 'reg/rt cuda:1' is not an image"),
    ({"EDGEAI_RUNTIME_IMAGE": "https://reg/rt:1"}, "EDGEAI_RUNTIME_IMAGE: 'https://reg/rt:1' is not an image"),
])
def test_a_bad_image_setting_names_the_variable(env: dict[str, str], says: str) -> None:
    with pytest.raises(RuntimeImagesError) as e:
        from_env(env, "default:0")
    assert says in str(e.value)


def test_the_operator_refuses_to_start_on_a_bad_image_setting(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from edge_operator.controller import config

    monkeypatch.setenv("EDGEAI_RUNTIME_IMAGE_CUDA", "reg/rt-cuda:1")
    assert config.parse([]).images.image("cuda") == "reg/rt-cuda:1"
    monkeypatch.setenv("EDGEAI_RUNTIME_IMAGE_TPU", "reg/rt-tpu:1")
    with pytest.raises(SystemExit):
        config.parse([])
    assert "EDGEAI_RUNTIME_IMAGE_TPU: unknown runtime family 'tpu'" in capsys.readouterr().err


def _placed(rt: Any, families: frozenset[str] | None, *devices: Any) -> dict[str, Any]:
    return place(None, Requirements(), SOURCE, [FP16, INT8], devices, runtime=rt, families=families).by_device()


def test_a_gpu_device_runs_its_fp16_build_on_cuda_when_the_cuda_family_has_an_image() -> None:
    a = _placed(None, CUDA_ONLY, GPU)["gpu-0"]
    assert (a.artifact.name, a.acceleration.provider, a.acceleration.resource) == ("fp16", "CUDA", "nvidia.com/gpu")


def test_a_family_with_no_image_gets_the_cpu_build_and_the_reason_names_the_setting() -> None:
    by = _placed(None, CUDA_ONLY, GPU, IGPU, ASCEND)
    igpu = by["igpu-0"]  # OpenVINO drives it: no openvino image
    assert (igpu.artifact.name, igpu.acceleration.provider, igpu.acceleration.resource) == ("default", "CPU", None)
    assert igpu.acceleration.reason == (
        "CPU: gpu (gpu.intel.com/i915): OpenVINO would drive it, but the operator has no runtime image for the "
        "openvino family (set EDGEAI_RUNTIME_IMAGE_OPENVINO; chart: runtime.images.openvino)")
    assert by["npu-0"].artifact.name == "default" and "no runtime image for the cann family" in (
        by["npu-0"].acceleration.reason)
    assert by["gpu-0"].acceleration.provider == "CUDA"


def test_require_accelerator_with_no_image_for_the_family_leaves_the_device_unplaced() -> None:
    p = place(None, Requirements(), SOURCE, [FP16], [GPU], runtime=runtime({"requireAccelerator": True}),
              families=frozenset({"cpu"}))
    (rej,) = p.rejections
    assert rej.reason == "NoExecutionProvider" and "no runtime image for the cuda family" in rej.message


def test_the_first_provider_with_an_image_wins_and_the_list_keeps_its_family_only() -> None:
    # A GPU known by its label only: OpenVINO and CUDA both might drive it.
    gpu = device("gpu-l", {}, {"edgeai.io/accelerator": "gpu"})
    rt = runtime({"executionProviders": [{"name": "OpenVINO"}, {"name": "TensorRT"}, {"name": "CUDA"}]})
    a = _placed(rt, None, gpu)["gpu-l"]
    # One image holds one onnxruntime build: the CUDA entries could never start in the openvino image.
    assert [p.name for p in a.acceleration.providers] == ["OpenVINO", "CPU"]
    b = _placed(rt, CUDA_ONLY, gpu)["gpu-l"]
    assert [p.name for p in b.acceleration.providers] == ["TensorRT", "CUDA", "CPU"]


def _model() -> dict[str, Any]:
    art = [{"name": "fp16", "precision": "fp16", "uri": FP16.uri, "sha256": FP16.sha256, "accelerators": ["gpu"]}]
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "mu", "generation": 1},
            "spec": {"version": "1", "source": {"uri": SOURCE.uri, "sha256": SOURCE.sha256}, "variants": art},
            "status": {"observedGeneration": 1, "sha256": SOURCE.sha256,
                       "conditions": [{"type": "Verified", "status": "True", "reason": "Verified", "message": "ok"}],
                       "variants": [{"name": "fp16", "verified": True, "sha256": FP16.sha256}]}}


def _plan(images: RuntimeImages, status: dict[str, Any] | None = None, rt: dict[str, Any] | None = None,
          devices: tuple[Any, ...] = (GPU, IGPU, CPU_DEV)) -> planner.IdepPlan:
    idep = {"metadata": {"name": "d", "namespace": "ns", "uid": "du", "generation": 1},
            "spec": {"model": "m", **({"runtime": rt} if rt else {})}, "status": status or {}}
    return planner.plan(idep_info(idep), model_info(_model()), {d.name: d for d in devices}, {}, {},
                        images=images, now="2026-01-01T00:00:00Z")


def _images_of(m: dict[str, Any]) -> set[str]:
    pod = m["spec"]
    return {x["image"] for x in (*pod["initContainers"], *pod["containers"])}


def test_each_device_gets_the_image_of_its_providers_family() -> None:
    p = _plan(IMAGES)
    by = {m["metadata"]["annotations"][c.A_DEVICE]: m for m in p.apply}
    assert _images_of(by["gpu-0"]) == {"reg/rt-cuda:1"}
    assert _images_of(by["igpu-0"]) == {"reg/rt-openvino:1"}
    assert _images_of(by["cpu-0"]) == {"reg/rt:1"}
    gpu = server(by["gpu-0"])
    assert by["gpu-0"]["metadata"]["annotations"][c.A_VARIANT] == "fp16"
    assert gpu["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert json.loads(flag(gpu["args"], "--execution-providers") or "") == [{"name": "CUDA"}, {"name": "CPU"}]
    rows = {r["device"]: r for r in p.status["devices"]}
    assert rows["gpu-0"]["executionProvider"] == "CUDA" and rows["cpu-0"]["executionProvider"] == "CPU"


def test_an_npu_no_listed_provider_drives_gets_the_cpu_build_in_the_cpu_image_and_why() -> None:
    p = _plan(IMAGES, rt={"executionProviders": [{"name": "CUDA"}, {"name": "CPU"}]}, devices=(GPU, ASCEND))
    by = {m["metadata"]["annotations"][c.A_DEVICE]: m for m in p.apply}
    assert _images_of(by["npu-0"]) == {"reg/rt:1"} and _images_of(by["gpu-0"]) == {"reg/rt-cuda:1"}
    assert by["npu-0"]["metadata"]["annotations"][c.A_VARIANT] == "default"
    row = next(r for r in p.status["devices"] if r["device"] == "npu-0")
    assert row["executionProvider"] == "CPU"
    assert "no entry of spec.runtime.executionProviders drives it (CANN would)" in row["acceleration"]


def test_a_cpu_only_operator_runs_every_device_on_the_cpu_image_with_the_reason_in_status() -> None:
    p = _plan(RuntimeImages("reg/rt:1"))
    by = {m["metadata"]["annotations"][c.A_DEVICE]: m for m in p.apply}
    assert {d: _images_of(m) for d, m in by.items()} == {d: {"reg/rt:1"} for d in ("cpu-0", "gpu-0", "igpu-0")}
    assert by["gpu-0"]["metadata"]["annotations"][c.A_VARIANT] == "default"
    assert "limits" not in server(by["gpu-0"])["resources"]
    rows = {r["device"]: r for r in p.status["devices"]}
    assert rows["gpu-0"]["executionProvider"] == "CPU"
    assert "no runtime image for the cuda family (set EDGEAI_RUNTIME_IMAGE_CUDA" in rows["gpu-0"]["acceleration"]


def test_the_images_are_part_of_the_revision_and_a_cpu_only_template_is_unchanged() -> None:
    m = model_info(_model())
    plain = rev.template_for(m, None, None, RuntimeImages("reg/rt:1"))
    assert "images" not in plain.to_dict()  # the hash of every existing revision stays as it was
    with_cuda = rev.template_for(m, None, None, RuntimeImages.of("reg/rt:1", {"cuda": "reg/rt-cuda:1"}))
    assert with_cuda.hash() != plain.hash()
    assert rev.Template.from_dict(with_cuda.to_dict()) == with_cuda
    assert with_cuda.runtime_images().for_provider("CUDA") == "reg/rt-cuda:1"
    # A new cuda image rolls out as a new revision, and says so.
    first = _plan(RuntimeImages.of("reg/rt:1", {"cuda": "reg/rt-cuda:1"}))
    second = _plan(RuntimeImages.of("reg/rt:1", {"cuda": "reg/rt-cuda:2"}), status=first.status)
    assert second.status["revision"] == 2
    assert "cuda image reg/rt-cuda:1 -> reg/rt-cuda:2" in second.status["revisions"][-1]["reason"]
