"""The CUDA and TensorRT execution providers for real, on an NVIDIA GPU when this machine has one.

Skipped, with the reason, where there is no NVIDIA GPU (CI's machines have none). Where there is one,
the server is this checkout's `edge-runtime serve` run by an interpreter whose onnxruntime has the CUDA
provider: this one when its onnxruntime does, else $EDGEAI_GPU_PYTHON, else a virtualenv of its own
with onnxruntime-gpu[cuda,cudnn] from PyPI (hack/sidevenv.py; CUDA and cuDNN come as nvidia-* wheels,
which the runtime preloads). Requests go over real HTTP, with the provider list the operator gives a
Pod on a GPU device, and the answers are compared with the CPU provider's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import sidevenv  # hack/ (tests/conftest.py puts it on the path)

from edge_runtime import models_zoo

from .conftest import ROOT, Models, Server, json_infer_body, metric_value, sha256_of

pytestmark = pytest.mark.runtime

CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
VENV = sidevenv.CACHE / "provider-venvs" / "cuda"
REQUIREMENTS = [*sidevenv.project_dependencies(without=["onnxruntime"]), "onnxruntime-gpu[cuda,cudnn]"]
PROBE = f"import onnxruntime as o; assert {CUDA!r} in o.get_available_providers(), o.get_available_providers()"
X = models_zoo.sample_inputs("cnn", 4, seed=5)


def no_gpu() -> str | None:
    """Why this machine has no usable NVIDIA GPU, or None when it has one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "nvidia-smi is not installed"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi -L failed: {e}"
    if out.returncode != 0 or "GPU " not in out.stdout:
        return f"nvidia-smi -L lists no GPU: {(out.stdout + out.stderr).strip()[:200]}"
    return None


@pytest.fixture(scope="module")
def gpu_python() -> str:
    why = no_gpu()
    if why is not None:
        pytest.skip(f"no NVIDIA GPU on this machine ({why}): the CUDA and TensorRT providers need one")
    if CUDA in ort.get_available_providers():
        return sys.executable
    if os.environ.get("EDGEAI_GPU_PYTHON"):
        return os.environ["EDGEAI_GPU_PYTHON"]
    problem = sidevenv.ensure(VENV, REQUIREMENTS, PROBE)
    if problem is not None:
        pytest.skip(f"onnxruntime-gpu could not be installed: {problem}")
    return str(sidevenv.python(VENV))


def _probe(python: str, code: str) -> str:
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    return out.stdout.strip() if out.returncode == 0 else f"error: {out.stderr.strip()[-300:]}"


def tensorrt_missing(python: str) -> str | None:
    """Why the TensorRT provider cannot start here (its libraries are separate from onnxruntime-gpu's), or None."""
    if TRT not in _probe(python, "import onnxruntime as o; print(o.get_available_providers())"):
        return "this onnxruntime-gpu build has no TensorRT provider"
    found = _probe(python, "import ctypes.util, importlib.util as u; "
                           "print(bool(ctypes.util.find_library('nvinfer') or u.find_spec('tensorrt_libs') "
                           "or u.find_spec('tensorrt')))")
    return None if found == "True" else f"no TensorRT libraries (libnvinfer) on this machine ({found})"


@dataclass
class Load:
    meta: dict[str, Any]
    metrics: str
    output: np.ndarray
    log: str


def _load(python: str, model: Path, providers: list[str], cache: Path, log: Path, *extra: str) -> Load:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "operator"), str(ROOT),
                                                       os.environ.get("PYTHONPATH", "")]))}
    args = ["--model", str(model), "--sha256", sha256_of(model), "--name", "cnn",
            "--execution-providers", json.dumps(providers), "--provider-cache", str(cache), *extra]
    s = Server(args, log=log, python=python, env=env).start(wait=False)
    try:
        # A first TensorRT engine build takes tens of seconds: a generous deadline.
        s.wait_live(300)
        deadline = time.monotonic() + 300
        while s.get("/v2/models/cnn/ready").status != 200:
            assert time.monotonic() < deadline, f"model not ready: {s.log_text()}"
            time.sleep(0.1)
        res = s.post("/v2/models/cnn/infer", json_infer_body("input", X))
        assert res.status == 200, res.body
        out = res.json()["outputs"][0]
        return Load(s.get("/v2/models/cnn").json(), s.metrics(), np.array(out["data"], np.float32).reshape(
            out["shape"]), s.log_text())
    finally:
        s.stop()


def _cpu(models: Models) -> np.ndarray:
    return np.asarray(models.session(models.cnn).run(None, {"input": X})[0])


def _close_to_cpu(got: np.ndarray, models: Models) -> None:
    expected = _cpu(models)
    # cuDNN picks its own convolution algorithms (TF32 on Ampere and later): equal within float32
    # accumulation differences, and the same class for every row.
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-3)
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.timeout(1800)  # the first run may make the venv
def test_cuda_answers_as_the_cpu_provider_does_and_says_it_runs(gpu_python: str, models: Models,
                                                                 tmp_path: Path) -> None:
    load = _load(gpu_python, models.cnn, [CUDA, "CPUExecutionProvider"], tmp_path / "cache", tmp_path / "cuda.log")
    assert load.meta["parameters"]["execution_provider"] == CUDA, (load.meta, load.log)
    assert "execution_provider_fallback" not in load.meta["parameters"], load.meta
    assert metric_value(load.metrics, "edgeai_model_execution_provider", {"model": "cnn", "provider": CUDA}) == 1
    assert metric_value(load.metrics, "edgeai_execution_provider_fallbacks_total", {"model": "cnn"}) == 0
    _close_to_cpu(load.output, models)


def test_a_required_accelerator_is_served_on_cuda(gpu_python: str, models: Models, tmp_path: Path) -> None:
    load = _load(gpu_python, models.cnn, [CUDA], tmp_path / "cache", tmp_path / "req.log", "--require-accelerator")
    assert load.meta["parameters"]["execution_provider"] == CUDA, (load.meta, load.log)
    _close_to_cpu(load.output, models)


def test_tensorrt_without_its_libraries_falls_back_to_cuda_with_the_reason(
        gpu_python: str, models: Models, tmp_path: Path) -> None:
    if tensorrt_missing(gpu_python) is None:
        pytest.skip("TensorRT's libraries are installed here: the TensorRT tests below run instead")
    load = _load(gpu_python, models.cnn, [TRT, CUDA, "CPUExecutionProvider"], tmp_path / "cache",
                 tmp_path / "trt-missing.log")
    params = load.meta["parameters"]
    assert params["execution_provider"] == CUDA, (load.meta, load.log)
    assert params["execution_provider_fallback"].startswith(f"{TRT}: "), params
    assert metric_value(load.metrics, "edgeai_execution_provider_fallbacks_total", {"model": "cnn"}) == 1
    _close_to_cpu(load.output, models)


def test_tensorrt_serves_and_its_engine_goes_to_the_provider_cache(gpu_python: str, models: Models,
                                                                    tmp_path: Path) -> None:
    why = tensorrt_missing(gpu_python)
    if why is not None:
        pytest.skip(why)
    cache = tmp_path / "cache"
    first = _load(gpu_python, models.cnn, [TRT, CUDA], cache, tmp_path / "trt1.log")
    assert first.meta["parameters"]["execution_provider"] == TRT, (first.meta, first.log)
    _close_to_cpu(first.output, models)
    engines = {p: p.stat().st_mtime_ns for p in (cache / "tensorrt" / sha256_of(models.cnn)).rglob("*.engine")}
    assert engines, sorted(cache.rglob("*"))
    again = _load(gpu_python, models.cnn, [TRT, CUDA], cache, tmp_path / "trt2.log")
    assert again.meta["parameters"]["execution_provider"] == TRT
    # The second load deserializes the cached engine instead of building it again.
    assert {p: p.stat().st_mtime_ns for p in engines} == engines

