"""The shared example models are real, deterministic and classify."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_runtime.models_zoo import build_cnn, build_tabular, sample_inputs


@pytest.mark.parametrize(
    ("kind", "build", "classes"),
    [("cnn", build_cnn, 10), ("tabular", build_tabular, 3)],
)
def test_models_load_run_and_are_deterministic(
    tmp_path: Path, kind: str, build: Callable[[Path], Path], classes: int
) -> None:
    a = build(tmp_path / "a.onnx")
    b = build(tmp_path / "b.onnx")
    assert a.read_bytes() == b.read_bytes()
    onnx.checker.check_model(onnx.load(str(a)), full_check=True)
    sess = ort.InferenceSession(str(a), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.shape[0] == "N"  # dynamic batch
    for batch in (1, 7):
        y = sess.run(None, {inp.name: sample_inputs(kind, batch)})[0]
        assert y.shape == (batch, classes)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    # More than one class is predicted on varied inputs: top-1 is a real decision.
    y = sess.run(None, {inp.name: sample_inputs(kind, 128)})[0]
    assert len(set(y.argmax(axis=1).tolist())) >= 2


def test_seed_and_shape_parameters(tmp_path: Path) -> None:
    a = build_cnn(tmp_path / "a.onnx", seed=0)
    b = build_cnn(tmp_path / "b.onnx", seed=1)
    assert a.read_bytes() != b.read_bytes()
    t = build_tabular(tmp_path / "t.onnx", features=5, classes=4)
    sess = ort.InferenceSession(str(t), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"features": sample_inputs("tabular", 2, features=5)})[0]
    assert y.shape == (2, 4)
    with pytest.raises(ValueError, match="num_classes"):
        build_cnn(tmp_path / "bad.onnx", num_classes=1)
