"""Benchmark models: the tabular MLP from models_zoo and a MobileNetV2-sized CNN.

The CNN follows MobileNetV2's layout (inverted residual blocks with depthwise
convolutions, width 1.0, 224x224 input, 1000 classes: ~3.5 M parameters and
~300 MFLOPs per image), batch-norm folded away, random weights from a fixed
seed. Built with onnx.helper so no pretrained weights are downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_runtime import models_zoo

MOBILENET_INPUT = "input"
MOBILENET_OUTPUT = "probabilities"
# (expansion, out channels, repeats, first stride) as in the MobileNetV2 paper
_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> str:
        w = self.name("w")
        b = self.name("b")
        fan_in = cin // groups * k * k
        self.inits.append(
            numpy_helper.from_array(
                (self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32), w
            )
        )
        self.inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), b))
        y = self.name("conv")
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups
            )
        )
        if not act:
            return y
        z = self.name("relu6")
        lo, hi = self.name("lo"), self.name("hi")
        self.inits += [
            numpy_helper.from_array(np.array(0, np.float32), lo),
            numpy_helper.from_array(np.array(6, np.float32), hi),
        ]
        self.nodes.append(helper.make_node("Clip", [y, lo, hi], [z]))
        return z


def mobilenet_v2(num_classes: int = 1000, image: int = 224, seed: int = 0) -> onnx.ModelProto:
    g = _Builder(seed)
    x = g.conv(MOBILENET_INPUT, 3, 32, 3, 2)
    cin = 32
    for t, c, n, s in _BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = g.conv(x, cin, hidden, 1, 1) if t != 1 else x
            y = g.conv(y, hidden, hidden, 3, stride, groups=hidden)
            y = g.conv(y, hidden, c, 1, 1, act=False)
            if stride == 1 and cin == c:
                out = g.name("add")
                g.nodes.append(helper.make_node("Add", [x, y], [out]))
                y = out
            x, cin = y, c
    x = g.conv(x, cin, 1280, 1, 1)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    g.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    fc_w = (g.rng.standard_normal((num_classes, 1280)) * np.sqrt(1.0 / 1280)).astype(np.float32)
    g.inits += [
        numpy_helper.from_array(fc_w, "fc.w"),
        numpy_helper.from_array(np.zeros(num_classes, np.float32), "fc.b"),
    ]
    g.nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    g.nodes.append(helper.make_node("Softmax", ["logits"], [MOBILENET_OUTPUT], axis=1))
    graph = helper.make_graph(
        g.nodes,
        "mobilenet_v2_like",
        [helper.make_tensor_value_info(MOBILENET_INPUT, TensorProto.FLOAT, ["N", 3, image, image])],
        [helper.make_tensor_value_info(MOBILENET_OUTPUT, TensorProto.FLOAT, ["N", num_classes])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeai-bench")
    model.ir_version = 8
    return model


def build(workdir: Path) -> dict[str, dict[str, object]]:
    """Write both models; returns {kind: {path, input, output, sample}}."""
    workdir.mkdir(parents=True, exist_ok=True)
    tab = models_zoo.build_tabular(workdir / "tabular.onnx")
    cnn = workdir / "mobilenet_v2.onnx"
    if not cnn.exists():
        m = mobilenet_v2()
        onnx.checker.check_model(m)
        cnn.write_bytes(m.SerializeToString())
    rng = np.random.default_rng(0)
    return {
        "tabular": {
            "path": tab,
            "input": models_zoo.TABULAR_INPUT,
            "output": models_zoo.OUTPUT,
            "sample": rng.standard_normal((1, 16)).astype(np.float32),
        },
        "mobilenet": {
            "path": cnn,
            "input": MOBILENET_INPUT,
            "output": MOBILENET_OUTPUT,
            "sample": rng.standard_normal((1, 3, 224, 224)).astype(np.float32),
        },
    }
