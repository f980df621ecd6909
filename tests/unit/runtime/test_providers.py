"""Execution providers: the list a runtime is given, tried in order with the CPU last, and what it reports.

This machine's onnxruntime has only the CPU (and Azure): every accelerator asked for is passed over
with a reason, which is what these tests hold. Real TensorRT/CUDA/OpenVINO runs need their wheels and
hardware (see docs: a GPU node's test asks for CUDA and checks `execution_provider` in the metadata).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_runtime import cli, models_zoo, serve_cli
from edge_runtime.artifacts.integrity import IntegrityError
from edge_runtime.core.providers import (
    CPU,
    ProviderRequest,
    ProviderSpecError,
    ordered,
    parse_item,
    parse_json,
    with_cache,
)
from edge_runtime.serving import model as model_mod
from edge_runtime.serving.dataplane import DataPlane
from edge_runtime.serving.model import load_model, warm_up
from edge_runtime.serving.repository import ModelSource, Settings
from edge_runtime.telemetry.metrics import RuntimeMetrics

CUDA = "CUDAExecutionProvider"


def test_lists_read_short_and_onnxruntime_names_with_options() -> None:
    got = parse_json('[{"name": "TensorRT", "options": {"device_id": 0, "trt_fp16_enable": true}}, "cuda", "CPU"]')
    assert [r.name for r in got] == ["TensorrtExecutionProvider", CUDA, CPU]
    assert got[0].options == {"device_id": "0", "trt_fp16_enable": "true"}
    assert parse_item("OpenVINO:device_type=GPU,precision=FP16") == ProviderRequest(
        "OpenVINOExecutionProvider", {"device_type": "GPU", "precision": "FP16"})
    assert parse_item("ROCm").name == "ROCMExecutionProvider"
    # The CPU goes last, added when not named; a provider named twice keeps its first entry.
    assert [r.name for r in ordered([ProviderRequest(CPU), ProviderRequest(CUDA), ProviderRequest(CUDA, {"a": "1"})])
            ] == [CUDA, CPU]


@pytest.mark.parametrize(("text", "says"), [
    ("CUDA", "not JSON"),
    ('{"name": "CUDA"}', "must be a JSON list"),
    ('["Cuda2"]', "unknown execution provider 'Cuda2'"),
    ('[{"name": "CUDA", "opts": {}}]', "unknown keys ['opts']"),
    ('[{"name": "CUDA", "options": {"device_id": [0]}}]', "option 'device_id'"),
])
def test_a_bad_list_names_the_flag_and_the_entry(text: str, says: str) -> None:
    with pytest.raises(ProviderSpecError) as e:
        parse_json(text)
    assert "--execution-providers" in str(e.value) and says in str(e.value)
    with pytest.raises(ProviderSpecError, match=r"--execution-provider 'CUDA:device_id'.*not key=value"):
        parse_item("CUDA:device_id")


def test_compiling_providers_keep_their_engines_in_the_provider_cache() -> None:
    reqs = with_cache(ordered([ProviderRequest("TensorrtExecutionProvider"),
                               ProviderRequest("OpenVINOExecutionProvider", {"cache_dir": "/mine"})]), "/pc", "ab")
    assert reqs[0].options["trt_engine_cache_path"] == "/pc/tensorrt/ab"
    assert reqs[0].options["trt_engine_cache_enable"] == "True"
    assert reqs[1].options == {"cache_dir": "/mine"}  # the person's option wins
    assert reqs[2] == ProviderRequest(CPU)


def _tabular() -> bytes:
    return bytes(models_zoo.tabular_model().SerializeToString())


def test_cuda_then_cpu_loads_on_the_cpu_and_says_why() -> None:
    data = _tabular()
    m = load_model(data, name="t", version="1", sha256="0" * 64, providers=parse_json('["CUDA", "CPU"]'))
    assert m.session.get_providers() == [CPU]
    assert m.providers.provider == CPU
    assert m.providers.requested == (CUDA, CPU)
    [(name, why)] = m.providers.passed_over
    assert name == CUDA and "not in this onnxruntime build" in why
    params = m.metadata(["1"])["parameters"]
    assert params["execution_provider"] == CPU
    assert params["execution_provider_fallback"].startswith(f"{CUDA}: not in this onnxruntime build")
    # Same numbers as a plain CPU session.
    x = models_zoo.sample_inputs("tabular", 4)
    plain = ort.InferenceSession(data, providers=[CPU])
    feed = {plain.get_inputs()[0].name: x}
    for a, b in zip(m.run(feed), plain.run(None, feed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_provider_onnxruntime_quietly_replaces_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a GPU wheel on a node without a working driver: listed as available, but the session ends on the CPU.
    monkeypatch.setattr(model_mod.ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.warns(UserWarning):
        m = load_model(_tabular(), name="t", version="1", sha256="0" * 64, providers=[ProviderRequest(CUDA)])
    assert m.providers.provider == CPU
    assert "did not register it" in m.providers.reason


def test_requiring_an_accelerator_when_none_starts_refuses_the_model() -> None:
    with pytest.raises(IntegrityError) as e:
        load_model(_tabular(), name="t", version="1", sha256="0" * 64, providers=[ProviderRequest(CUDA)],
                   require_accelerator=True)
    assert e.value.reason == "NoAccelerator"
    assert "an accelerator is required and none loaded" in e.value.message and CUDA in e.value.message
    with pytest.raises(IntegrityError, match="names no accelerator provider"):
        load_model(_tabular(), name="t", version="1", sha256="0" * 64, require_accelerator=True)


def _model_file(tmp_path: Path) -> tuple[Path, str]:
    path = models_zoo.build_tabular(tmp_path / "t.onnx")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _sample(metrics: RuntimeMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_the_dataplane_reports_the_provider_in_metadata_and_metrics(tmp_path: Path) -> None:
    path, sha = _model_file(tmp_path)
    metrics = RuntimeMetrics(process=False)
    dp = DataPlane(Settings(warmup_runs=1, execution_providers=tuple(parse_json('["CUDA"]'))), metrics)
    dp.load_initial("t", ModelSource(str(path), sha, "1"))
    params = dp.model_metadata("t", None)["parameters"]
    assert params["execution_provider"] == CPU and CUDA in params["execution_provider_fallback"]
    assert _sample(metrics, "edgeai_model_execution_provider", model="t", version="1", provider=CPU) == 1
    assert _sample(metrics, "edgeai_execution_provider_fallbacks_total", model="t", provider=CUDA) == 1
    assert dp.readiness().ready


def test_a_required_accelerator_that_does_not_load_keeps_the_server_from_ready(tmp_path: Path) -> None:
    path, sha = _model_file(tmp_path)
    metrics = RuntimeMetrics(process=False)
    dp = DataPlane(Settings(warmup_runs=1, execution_providers=(ProviderRequest(CUDA),), require_accelerator=True),
                   metrics)
    with pytest.raises(IntegrityError, match=r"NoAccelerator|an accelerator is required"):
        dp.load_initial("t", ModelSource(str(path), sha, "1"))
    j = dp.readiness()
    assert not j.ready and j.reason
    assert _sample(metrics, "edgeai_model_loads_total", model="t", outcome="failed") == 1


def test_serve_refuses_to_start_without_the_required_accelerator(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path, sha = _model_file(tmp_path)
    args = cli.build_parser().parse_args(
        ["serve", "--model", str(path), "--sha256", sha, "--name", "t",
         "--execution-provider", "CUDA:device_id=0", "--require-accelerator"])
    assert [r.name for r in args.execution_provider] == [CUDA]
    with pytest.raises(IntegrityError) as e:
        serve_cli.build(args)
    assert e.value.reason == "NoAccelerator"


def test_serve_names_a_bad_provider_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["serve", "--model", "m", "--sha256", "0" * 64, "--name", "t",
                                       "--execution-providers", '["Cuda2"]'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --execution-providers" in err and "unknown execution provider 'Cuda2'" in err


def test_parallel_runs_split_the_cores_between_runs_and_a_bad_count_names_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, sha = _model_file(tmp_path)
    base = ["serve", "--model", str(path), "--sha256", sha, "--name", "t"]
    dp = serve_cli.build(cli.build_parser().parse_args([*base, "--parallel-runs", "2"])).dp
    cores = len(os.sched_getaffinity(0))
    assert dp.settings.run_threads == max(1, cores // 2)
    assert dp.served("t").runner.describe()["parallel_runs"] == 2
    pinned = serve_cli.build(cli.build_parser().parse_args([*base, "--parallel-runs", "2", "--threads", "3"])).dp
    assert pinned.settings.run_threads == 3  # --threads wins
    for bad in ("0", "65", "x"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([*base, "--parallel-runs", bad])
        assert "argument --parallel-runs" in capsys.readouterr().err


def test_warm_up_runs_on_the_provider_the_session_got() -> None:
    m = load_model(_tabular(), name="t", version="1", sha256="0" * 64, providers=parse_json('["OpenVINO", "CPU"]'))
    warm_up(m, 1)
    assert m.providers.provider == CPU and "OpenVINOExecutionProvider" in m.providers.reason


@pytest.mark.parametrize(("spin_in_run", "allow", "stop"), [(False, "0", None), (True, "1", "1")])
def test_session_options_spin_within_a_run_only_when_asked(spin_in_run: bool, allow: str, stop: str | None) -> None:
    """By default onnxruntime's workers never spin; with spin_in_run they spin within a run and stop when it
    returns (session.force_spinning_stop), so no core is left busy after a run either way."""
    opts = model_mod.session_options(None, spin_in_run)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == allow
    if stop is None:
        with pytest.raises(Exception, match="force_spinning_stop"):  # not set at all
            opts.get_session_config_entry("session.force_spinning_stop")
    else:
        assert opts.get_session_config_entry("session.force_spinning_stop") == stop
