"""`pack` on a model trained on real data, measured on every execution provider this onnxruntime has.

The model is a small CNN trained here on scikit-learn's digits (benchmarks/pack/digits.py, 8x8 images,
a few seconds), so agreement between builds means something: a random-weight model's int8 build can
disagree with fp32 on half its random inputs and still be a fine build.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest

from benchmarks.pack import digits
from edge_runtime.cli import main as cli_main
from edge_runtime.core.providers import ORT_NAMES, is_accelerator
from edge_runtime.pack import report as rep
from edge_runtime.pack.errors import PackError
from edge_runtime.pack.packer import PackOptions, PackResult, pack

SMALL = digits.Config(upsample=1, channels=(16, 32), hidden=64, epochs=8)
ACCELERATORS = [p for p in ort.get_available_providers() if p in set(ORT_NAMES.values()) and is_accelerator(p)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> digits.Trained:
    return digits.build(tmp_path_factory.mktemp("digits"), SMALL)


def run(t: digits.Trained, out: Path, **kw: object) -> PackResult:
    return pack(PackOptions(model=t.model, output=out, calibration=t.calibration, eval_data=t.evaluation,
                            runs=10, warmup=2, **kw))  # type: ignore[arg-type]


def test_the_trained_model_is_a_real_classifier(trained: digits.Trained) -> None:
    assert trained.accuracy >= 0.9, trained.accuracy


def test_int8_of_a_trained_model_is_smaller_and_agrees_with_fp32(trained: digits.Trained, tmp_path: Path) -> None:
    res = run(trained, tmp_path / "out", providers=[])
    by = {r.name: r for r in res.reports}
    assert [r.name for r in res.reports if r.included] == ["fp32", "fp16", "int8"]
    assert res.report["settings"]["int8_mode"] == "static"
    # Real images, well-separated classes: the builds give the same answers on held-out data.
    assert by["fp16"].top1_agreement is not None and by["fp16"].top1_agreement >= 0.99
    assert by["int8"].top1_agreement is not None and by["int8"].top1_agreement >= 0.95
    assert by["int8"].size < 0.5 * by["fp32"].size
    assert res.report["settings"]["providers"] == {"measured": ["CPUExecutionProvider"], "unavailable": {}}
    assert all(not r.providers for r in res.reports)


def test_each_provider_this_onnxruntime_has_is_measured(trained: digits.Trained, tmp_path: Path) -> None:
    # The default (auto): every accelerator provider of this build; none on the CPU wheel, CUDA (and
    # TensorRT) on onnxruntime-gpu, OpenVINO on onnxruntime-openvino.
    res = run(trained, tmp_path / "out")
    assert res.report["settings"]["providers"]["measured"] == ["CPUExecutionProvider", *ACCELERATORS]
    for r in res.reports:
        assert [f.provider for f in r.providers] == ACCELERATORS
        for f in r.providers:
            # A provider the machine cannot start (no device, no library) says why, and does not fail the pack.
            assert f.error or (f.latency is not None and f.top1_agreement is not None), f
            if not f.error:
                assert f.top1_agreement is not None and f.top1_agreement >= 0.95, f
    shown = json.loads((res.output / "report.json").read_text())
    assert [[p["provider"] for p in v["providers"]] for v in shown["variants"]] == [ACCELERATORS] * 3


def test_a_provider_this_build_lacks_is_reported_once_and_the_pack_goes_on(
        trained: digits.Trained, tmp_path: Path) -> None:
    lacking = next(n for n in ("CANN", "QNN", "MIGraphX") if ORT_NAMES[n] not in ort.get_available_providers())
    res = run(trained, tmp_path / "out", providers=[lacking, "cpu"])
    name = ORT_NAMES[lacking]
    why = res.report["settings"]["providers"]["unavailable"][name]
    assert why.startswith("not in this onnxruntime build (it has ")
    assert all([(f.provider, f.error) for f in r.providers] == [(name, why)] for r in res.reports)
    # Said once under the table, not once per build.
    assert res.table.count(why) == 1 and f"{lacking}: {why}" in res.table
    assert [r.name for r in res.reports if r.included] == ["fp32", "fp16", "int8"]


def test_an_unknown_provider_name_is_refused_before_any_work(trained: digits.Trained, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PackError, match="unknown execution provider 'Cuda9'"):
        run(trained, tmp_path / "out", providers=["Cuda9"])
    assert not (tmp_path / "out").exists()
    assert cli_main(["pack", str(trained.model), "-o", str(tmp_path / "o"), "--providers", "Cuda9"]) != 0
    assert "unknown execution provider 'Cuda9'" in capsys.readouterr().err


def test_provider_tables_and_ratios_are_per_provider() -> None:
    lat = rep.latency_stats
    reports = [rep.VariantReport("fp32", "fp32", size=100, latency=lat([0.004]), top1_agreement=1.0,
                                 providers=[rep.ProviderFigures("CUDAExecutionProvider", lat([0.002]), 1.0, 0.0),
                                            rep.ProviderFigures("TensorrtExecutionProvider", error="no libnvinfer")]),
               rep.VariantReport("int8", "int8", size=25, latency=lat([0.002]), top1_agreement=0.99,
                                 providers=[rep.ProviderFigures("CUDAExecutionProvider", lat([0.003]), 0.98, 0.1),
                                            rep.ProviderFigures("TensorrtExecutionProvider", error="no libnvinfer")])]
    assert rep.provider_ratios(reports) == {("fp32", "CUDAExecutionProvider"): 1.0,
                                            ("int8", "CUDAExecutionProvider"): 1.5,
                                            ("fp32", "TensorrtExecutionProvider"): None,
                                            ("int8", "TensorrtExecutionProvider"): None}
    text = rep.format_table(reports, "classifier")
    assert "CUDA " in text and "1.50" in text and "98.00%" in text
    assert text.count("no libnvinfer") == 1 and "TensorRT: no libnvinfer" in text
    md = rep.markdown_provider_table("digits", reports, "classifier")
    assert "| int8 | CUDA | 3.000 ms | 1.50 | 98.00% | 0.1 |  |" in md
    doc = rep.report_json(model={}, task="classifier", settings={}, reports=reports, manifest_file="m")
    assert doc["variants"][1]["providers"][0]["latency_p50_to_fp32"] == 1.5
