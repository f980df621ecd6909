"""Small, real ONNX models for tests, benchmarks, examples and the demo.

Built with `onnx.helper` and numpy (no torch: far too heavy for an edge CI), so
every part of the project can make a genuine model file in milliseconds.
Weights come from a fixed seed: the same call always writes the same bytes,
hence the same sha256, which tests and examples rely on.

Both models take a dynamic batch dimension named "N" and end in Softmax, so
their output is a probability vector and the top-1 confidence means something
(the runtime's edge-cloud fallback compares it with a threshold).

`onnx` comes from the `pack` extra: this module is for tools and tests, the
runtime itself never imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Kept at a level every onnxruntime >= 1.15 loads (IR 8 = opsets up to 17/18),
# so files made here also load on older runtimes found on edge devices.
OPSET = 17
IR_VERSION = 8

CNN_INPUT = "input"
TABULAR_INPUT = "features"
OUTPUT = "probabilities"


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    # He-scaled weights keep activations from collapsing to zero through ReLUs,
    # so the softmax is not flat and top-1 is a real decision.
    w: np.ndarray = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return w


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Deterministic serialisation: same inputs, same bytes, same digest.
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def _finish(graph: onnx.GraphProto, producer: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer, producer_version="1"
    )
    model.ir_version = IR_VERSION
    return model


def cnn_model(*, num_classes: int = 10, image: int = 32, seed: int = 0) -> onnx.ModelProto:
    """Image classifier: [N,3,image,image] float32 -> [N,num_classes] probabilities.

    (Conv-ReLU-MaxPool) x2, Flatten, Gemm, Softmax: the op mix of a real
    small CNN, including a Gemm head and Conv layers, the two cases int8
    quantizers treat differently. The head sees the spatial map (no global
    pooling) so that different inputs, even noise, get different classes and
    top-1 agreement between variants measures something.
    """
    if num_classes < 2 or image < 4 or image % 4:
        raise ValueError("a classifier needs num_classes >= 2 and image a multiple of 4")
    rng = np.random.default_rng(seed)
    c1, c2 = 8, 16
    flat = c2 * (image // 4) ** 2
    fc_w = _he(rng, (num_classes, c2, (image // 4) ** 2), flat) * 2.0
    # ReLU features have a positive per-channel mean; without this the class
    # whose weights happen to sum highest wins for almost every input. Zero-sum
    # weights within each channel cancel that mean, so classes stay balanced.
    fc_w -= fc_w.mean(axis=2, keepdims=True)
    inits = [
        _init("conv1.w", _he(rng, (c1, 3, 3, 3), 3 * 9)),
        _init("conv1.b", (rng.standard_normal(c1) * 0.05).astype(np.float32)),
        _init("conv2.w", _he(rng, (c2, c1, 3, 3), c1 * 9)),
        _init("conv2.b", (rng.standard_normal(c2) * 0.05).astype(np.float32)),
        # Larger head weights spread the logits so the classes are well separated.
        _init("fc.w", fc_w.reshape(num_classes, flat)),
        _init("fc.b", (rng.standard_normal(num_classes) * 0.1).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", [CNN_INPUT, "conv1.w", "conv1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], [OUTPUT], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "edgeai_cnn",
        [helper.make_tensor_value_info(CNN_INPUT, TensorProto.FLOAT, ["N", 3, image, image])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", num_classes])],
        initializer=inits,
    )
    return _finish(graph, "edgeai-models-zoo-cnn")


def tabular_model(
    *, features: int = 16, classes: int = 3, seed: int = 0, hidden: int = 32, constant_class: int | None = None
) -> onnx.ModelProto:
    """Tabular MLP: [N,features] float32 -> [N,classes] probabilities.

    Written as MatMul+Add (as many exporters emit Linear layers) so that
    dynamic int8 quantization, which handles MatMul but not Gemm, applies.
    `constant_class`: a deliberately broken build of the same model (same inputs, outputs and
    graph, loads and answers like it) whose last layer lost its weights, so it answers that class
    for every row: what only a quality gate catches.
    """
    if classes < 2 or features < 1 or hidden < 1:
        raise ValueError("a classifier needs classes >= 2, features >= 1 and hidden >= 1")
    rng = np.random.default_rng(seed)
    h1, h2 = hidden, hidden
    w1, b1 = _he(rng, (features, h1), features), (rng.standard_normal(h1) * 0.05).astype(np.float32)
    w2, b2 = _he(rng, (h1, h2), h1), (rng.standard_normal(h2) * 0.05).astype(np.float32)
    w3 = _he(rng, (h2, classes), h2) * 2.0
    # Same reason as the CNN head: cancel the positive mean of ReLU features
    # so no class wins by default.
    w3 -= w3.mean(axis=0, keepdims=True)
    b3 = (rng.standard_normal(classes) * 0.1).astype(np.float32)
    if constant_class is not None:
        w3 = np.zeros_like(w3)
        b3 = np.zeros(classes, dtype=np.float32)
        b3[constant_class] = 4.0
    inits = [
        _init("fc1.w", w1),
        _init("fc1.b", b1),
        _init("fc2.w", w2),
        _init("fc2.b", b2),
        _init("fc3.w", w3),
        _init("fc3.b", b3),
    ]
    nodes = [
        helper.make_node("MatMul", [TABULAR_INPUT, "fc1.w"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "fc1.b"], ["a1"], name="fc1.bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "fc2.w"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "fc2.b"], ["a2"], name="fc2.bias"),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
        helper.make_node("MatMul", ["r2", "fc3.w"], ["m3"], name="fc3"),
        helper.make_node("Add", ["m3", "fc3.b"], ["logits"], name="fc3.bias"),
        helper.make_node("Softmax", ["logits"], [OUTPUT], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "edgeai_tabular",
        [helper.make_tensor_value_info(TABULAR_INPUT, TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", classes])],
        initializer=inits,
    )
    return _finish(graph, "edgeai-models-zoo-tabular")


def build_cnn(path: Path, *, num_classes: int = 10, image: int = 32, seed: int = 0) -> Path:
    """Write the small CNN classifier to `path` (parents created); returns the path."""
    return _save(cnn_model(num_classes=num_classes, image=image, seed=seed), path)


def build_tabular(
    path: Path, *, features: int = 16, classes: int = 3, seed: int = 0, hidden: int = 32,
    constant_class: int | None = None,
) -> Path:
    """Write the tabular MLP classifier to `path` (parents created); returns the path.

    `hidden` (width of both hidden layers) makes a bigger model for benchmarks; `constant_class` a
    broken build that answers one class for every row (`tabular_model`).
    """
    return _save(tabular_model(features=features, classes=classes, seed=seed, hidden=hidden,
                               constant_class=constant_class), path)


def sample_inputs(kind: str, batch: int, *, image: int = 32, features: int = 16, seed: int = 0) -> np.ndarray:
    """Deterministic float32 inputs shaped for `kind` ("cnn" or "tabular")."""
    rng = np.random.default_rng(seed)
    if kind == "cnn":
        return rng.standard_normal((batch, 3, image, image)).astype(np.float32)
    if kind == "tabular":
        return rng.standard_normal((batch, features)).astype(np.float32)
    raise ValueError(f"kind must be 'cnn' or 'tabular', got {kind!r}")
