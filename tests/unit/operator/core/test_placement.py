"""Placement: selector x requirements x capabilities, and the build each device gets."""

from __future__ import annotations

from edge_operator.core.capabilities import Capabilities
from edge_operator.core.placement import Artifact, DeviceView, Requirements, choose_variant, place

H = "a" * 64


def art(name: str, precision: str, accels: tuple[str, ...], verified: bool = True, reason: str = "") -> Artifact:
    return Artifact(name, precision, f"https://m/{name}.onnx", H, accelerators=accels, verified=verified,
                    reason=reason)


SOURCE = Artifact("default", "fp32", "https://m/model.onnx", "b" * 64, accelerators=("cpu",), verified=True)
INT8 = art("int8", "int8", ("npu", "cpu"))
FP16 = art("fp16", "fp16", ("gpu",))


def dev(name: str, arch: str = "amd64", accel: tuple[str, ...] = ("cpu",), memory: str | None = "8Gi",
        labels: dict[str, str] | None = None, **kw: bool) -> DeviceView:
    lab = {"kubernetes.io/arch": arch, "edgeai.io/site": "site-a"}
    lab.update(labels or {})
    return DeviceView(name, name, lab, Capabilities(arch=arch, memory=memory, accelerators=accel), **kw)


FLEET = [
    dev("cpu-0"),
    dev("npu-0", arch="arm64", accel=("cpu", "npu"), memory="4Gi"),
    dev("gpu-0", accel=("cpu", "gpu"), memory="16Gi", labels={"edgeai.io/site": "site-b"}),
]


def test_variant_choice_int8_on_npu_fp16_on_gpu_fp32_else() -> None:
    p = place(None, Requirements(), SOURCE, [INT8, FP16], FLEET)
    got = {a.device: (a.artifact.name, a.artifact.precision) for a in p.assignments}
    assert got == {"cpu-0": ("default", "fp32"), "npu-0": ("int8", "int8"), "gpu-0": ("fp16", "fp16")}
    assert p.selected == 3 and p.rejections == ()


def test_prefers_the_accelerators_precision_among_several_suited_builds() -> None:
    fp16_npu = art("fp16-npu", "fp16", ("npu",))
    c = choose_variant(Capabilities(accelerators=("cpu", "npu")), SOURCE, [fp16_npu, INT8])
    assert c.artifact.name == "int8" and "npu" in c.why
    # With only the fp16 build suiting the NPU, the NPU still gets it rather than the CPU build.
    c = choose_variant(Capabilities(accelerators=("cpu", "npu")), SOURCE, [fp16_npu])
    assert c.artifact.name == "fp16-npu"


def test_unverified_variant_is_skipped_and_the_reason_says_so() -> None:
    bad = art("int8", "int8", ("npu",), verified=False, reason="DigestMismatch")
    c = choose_variant(Capabilities(accelerators=("cpu", "npu")), SOURCE, [bad])
    assert c.artifact is SOURCE
    assert "DigestMismatch" in c.why and "int8" in c.why


def test_explicit_fp32_cpu_variant_beats_the_default_source() -> None:
    fp32 = art("fp32-opt", "fp32", ("cpu",))
    c = choose_variant(Capabilities(accelerators=("cpu",)), SOURCE, [fp32, INT8])
    assert c.artifact.name == "fp32-opt"


def test_selector_match_labels_and_expressions() -> None:
    sel = {"matchLabels": {"edgeai.io/site": "site-a"},
           "matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}
    p = place(sel, Requirements(), SOURCE, [INT8], FLEET)
    assert [a.device for a in p.assignments] == ["npu-0"]
    assert p.selected == 1
    # The unselected are counted, never listed (one object per deployment and device was O(n^2)).
    assert p.rejections == () and p.not_selected == 2


def test_not_in_and_does_not_exist() -> None:
    sel = {"matchExpressions": [{"key": "edgeai.io/site", "operator": "NotIn", "values": ["site-b"]},
                                {"key": "quarantine", "operator": "DoesNotExist"}]}
    fleet = [*FLEET, dev("cpu-q", labels={"quarantine": "yes"})]
    p = place(sel, Requirements(), SOURCE, [], fleet)
    assert [a.device for a in p.assignments] == ["cpu-0", "npu-0"]


def test_every_unplaced_device_has_a_reason_requirements_first() -> None:
    req = Requirements(arch=("amd64",), min_memory="6Gi")
    fleet = [*FLEET, dev("small", memory="2Gi"), dev("other", labels={"edgeai.io/site": "site-z"})]
    sel = {"matchExpressions": [{"key": "edgeai.io/site", "operator": "In", "values": ["site-a", "site-b"]}]}
    p = place(sel, req, SOURCE, [], fleet)
    assert sorted(a.device for a in p.assignments) == ["cpu-0", "gpu-0"]
    by = {r.device: r for r in p.rejections}
    assert by["npu-0"].reason == "ArchMismatch" and "arm64" in by["npu-0"].message
    assert by["small"].reason == "InsufficientMemory"
    assert "6Gi" in by["small"].message and "2Gi" in by["small"].message
    assert "other" not in by and p.not_selected == 1
    assert len(p.assignments) + len(p.rejections) + p.not_selected == len(fleet)


def test_accelerator_requirement_and_unknown_memory() -> None:
    p = place(None, Requirements(accelerators=("gpu", "npu")), SOURCE, [], FLEET)
    assert sorted(a.device for a in p.assignments) == ["gpu-0", "npu-0"]
    assert {r.device: r.reason for r in p.rejections} == {"cpu-0": "NoAccelerator"}
    p = place(None, Requirements(min_memory="1Gi"), SOURCE, [], [dev("x", memory=None)])
    assert p.rejections[0].reason == "UnknownMemory"


def test_workload_memory_request_is_checked_against_the_device() -> None:
    p = place(None, Requirements(), SOURCE, [], FLEET, memory_request=6 * 2**30)
    assert sorted(a.device for a in p.assignments) == ["cpu-0", "gpu-0"]
    assert {r.device: r.reason for r in p.rejections} == {"npu-0": "InsufficientMemory"}


def test_missing_node_and_deleting_device_are_not_placed_but_offline_is() -> None:
    fleet = [dev("gone", node_exists=False), dev("bye", deleting=True), dev("off", online=False)]
    p = place(None, Requirements(), SOURCE, [], fleet)
    assert [a.device for a in p.assignments] == ["off"]
    assert {r.device: r.reason for r in p.rejections} == {"gone": "NodeNotFound", "bye": "DeviceDeleting"}


def test_placement_is_deterministic_whatever_the_input_order() -> None:
    a = place(None, Requirements(), SOURCE, [INT8, FP16], FLEET)
    b = place(None, Requirements(), SOURCE, [FP16, INT8], list(reversed(FLEET)))
    assert a == b
