"""A small CNN trained on scikit-learn's digits, exported to ONNX: a real model with real data for `pack`.

The benchmark's MobileNet-sized CNN has random weights and gets random inputs, so its int8 build's
"agreement" with fp32 says nothing (55% on one run: random logits are close together). A trained model
on real images does: its classes are far apart where the data is, as in production.

Pure numpy (im2col convolutions, Adam) so that nothing beyond scikit-learn (for the data set, which it
ships: 1,797 8x8 greyscale digits) and onnx is needed, and so that training is deterministic for a seed.
`upsample` scales the 8x8 images up (nearest neighbour) to give the convolutions work comparable to a
small camera model; the network is three conv+ReLU+maxpool stages, a hidden dense layer and softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "image"
OUTPUT = "probabilities"


@dataclass(frozen=True)
class Config:
    upsample: int = 4  # 8x8 -> 32x32
    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 128
    epochs: int = 12
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0

    @property
    def size(self) -> int:
        return 8 * self.upsample


@dataclass
class Digits:
    """Images [N,1,S,S] float32 in [0,1] and labels, split 80/20 by a fixed permutation."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load(upsample: int, seed: int = 0) -> Digits:
    from sklearn.datasets import load_digits  # the data set ships inside scikit-learn: no download

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    if upsample > 1:
        x = x.repeat(upsample, axis=2).repeat(upsample, axis=3)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(len(y) * 0.8)
    tr, te = order[:cut], order[cut:]
    return Digits(np.ascontiguousarray(x[tr]), y[tr], np.ascontiguousarray(x[te]), y[te])


# --- the network in numpy --------------------------------------------------------------------------


def _im2col(x: np.ndarray) -> np.ndarray:
    """[N,C,H,W] -> [N*H*W, C*9]: every 3x3 patch (zero padding 1), in ONNX Conv's weight order."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.empty((n, h, w, c, 3, 3), x.dtype)
    for i in range(3):
        for j in range(3):
            cols[:, :, :, :, i, j] = xp[:, :, i:i + h, j:j + w].transpose(0, 2, 3, 1)
    return cols.reshape(n * h * w, c * 9)


def _col2im(dcols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, 3, 3)
    dxp = np.zeros((n, c, h + 2, w + 2), dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + h, j:j + w] += d[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, 1:-1, 1:-1]


class Net:
    def __init__(self, cfg: Config) -> None:
        rng = np.random.default_rng(cfg.seed)
        self.params: dict[str, np.ndarray] = {}
        cin = 1
        for k, cout in enumerate(cfg.channels):
            self.params[f"conv{k}.w"] = (rng.standard_normal((cout, cin * 9)) * np.sqrt(2 / (cin * 9))).astype(
                np.float32)
            self.params[f"conv{k}.b"] = np.zeros(cout, np.float32)
            cin = cout
        side = cfg.size >> len(cfg.channels)
        flat = cin * side * side
        self.params["fc0.w"] = (rng.standard_normal((cfg.hidden, flat)) * np.sqrt(2 / flat)).astype(np.float32)
        self.params["fc0.b"] = np.zeros(cfg.hidden, np.float32)
        self.params["fc1.w"] = (rng.standard_normal((10, cfg.hidden)) * np.sqrt(1 / cfg.hidden)).astype(np.float32)
        self.params["fc1.b"] = np.zeros(10, np.float32)
        self.cfg = cfg

    def forward(self, x: np.ndarray, keep: bool = False) -> tuple[np.ndarray, list[tuple[str, object]]]:
        """Logits, and (when training) what the backward pass needs, stage by stage."""
        tape: list[tuple[str, object]] = []
        for k in range(len(self.cfg.channels)):
            n, _, h, w = x.shape
            cols = _im2col(x)
            wk, bk = self.params[f"conv{k}.w"], self.params[f"conv{k}.b"]
            y = (cols @ wk.T + bk).reshape(n, h, w, -1).transpose(0, 3, 1, 2)
            r = np.maximum(y, 0)
            c = r.shape[1]
            blocks = r.reshape(n, c, h // 2, 2, w // 2, 2)
            p = blocks.max(axis=(3, 5))
            if keep:
                tape.append(("conv", (k, cols, x.shape, y, blocks, p)))
            x = p
        n = x.shape[0]
        flat = x.reshape(n, -1)
        h0 = flat @ self.params["fc0.w"].T + self.params["fc0.b"]
        a0 = np.maximum(h0, 0)
        logits = a0 @ self.params["fc1.w"].T + self.params["fc1.b"]
        if keep:
            tape.append(("fc", (x.shape, flat, h0, a0)))
        return logits, tape

    def backward(self, dlogits: np.ndarray, tape: list[tuple[str, object]]) -> dict[str, np.ndarray]:
        grads: dict[str, np.ndarray] = {}
        pshape, flat, h0, a0 = tape[-1][1]  # type: ignore[misc]
        grads["fc1.w"] = dlogits.T @ a0
        grads["fc1.b"] = dlogits.sum(0)
        da0 = dlogits @ self.params["fc1.w"]
        dh0 = da0 * (h0 > 0)
        grads["fc0.w"] = dh0.T @ flat
        grads["fc0.b"] = dh0.sum(0)
        dx = (dh0 @ self.params["fc0.w"]).reshape(pshape)
        for _, item in reversed(tape[:-1]):
            k, cols, xshape, y, blocks, p = item  # type: ignore[misc]
            # Max pool: the gradient goes to the element(s) that were the maximum of their block.
            mask = blocks == p[:, :, :, None, :, None]
            dr = (mask * dx[:, :, :, None, :, None]).reshape(y.shape)
            dy = dr * (y > 0)
            n, f, h, w = dy.shape
            dyf = dy.transpose(0, 2, 3, 1).reshape(n * h * w, f)
            grads[f"conv{k}.w"] = dyf.T @ cols
            grads[f"conv{k}.b"] = dyf.sum(0)
            if k:
                dx = _col2im(dyf @ self.params[f"conv{k}.w"], xshape)
        return grads

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.forward(x[i:i + 256])[0] for i in range(0, len(x), 256)])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def train(cfg: Config, data: Digits) -> Net:
    net = Net(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    m = {k: np.zeros_like(v) for k, v in net.params.items()}
    v2 = {k: np.zeros_like(v) for k, v in net.params.items()}
    step = 0
    for _ in range(cfg.epochs):
        order = rng.permutation(len(data.train_y))
        for i in range(0, len(order), cfg.batch):
            idx = order[i:i + cfg.batch]
            logits, tape = net.forward(data.train_x[idx], keep=True)
            d = _softmax(logits)
            d[np.arange(len(idx)), data.train_y[idx]] -= 1
            grads = net.backward((d / len(idx)).astype(np.float32), tape)
            step += 1
            for k, g in grads.items():  # Adam
                m[k] = 0.9 * m[k] + 0.1 * g
                v2[k] = 0.999 * v2[k] + 0.001 * g * g
                mh = m[k] / (1 - 0.9 ** step)
                vh = v2[k] / (1 - 0.999 ** step)
                net.params[k] -= (cfg.lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return net


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((scores.argmax(1) == labels).mean())


# --- ONNX ------------------------------------------------------------------------------------------


def to_onnx(net: Net) -> onnx.ModelProto:
    cfg = net.cfg
    nodes, inits = [], []
    prev, cin = INPUT, 1
    for k, cout in enumerate(cfg.channels):
        w = net.params[f"conv{k}.w"].reshape(cout, cin, 3, 3)
        inits += [numpy_helper.from_array(w, f"conv{k}.w"), numpy_helper.from_array(net.params[f"conv{k}.b"],
                                                                                       f"conv{k}.b")]
        nodes += [
            helper.make_node("Conv", [prev, f"conv{k}.w", f"conv{k}.b"], [f"c{k}"], name=f"conv{k}",
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}"),
            helper.make_node("MaxPool", [f"r{k}"], [f"p{k}"], name=f"pool{k}", kernel_shape=[2, 2], strides=[2, 2]),
        ]
        prev, cin = f"p{k}", cout
    for name in ("fc0.w", "fc0.b", "fc1.w", "fc1.b"):
        inits.append(numpy_helper.from_array(net.params[name], name))
    nodes += [
        helper.make_node("Flatten", [prev], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc0.w", "fc0.b"], ["h0"], name="fc0", transB=1),
        helper.make_node("Relu", ["h0"], ["a0"], name="relu_fc0"),
        helper.make_node("Gemm", ["a0", "fc1.w", "fc1.b"], ["logits"], name="fc1", transB=1),
        helper.make_node("Softmax", ["logits"], [OUTPUT], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "edgeai_digits_cnn",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 1, cfg.size, cfg.size])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, producer_name="edgeai-digits-cnn", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the runtime images carry
    onnx.checker.check_model(model, full_check=True)
    return model


@dataclass
class Trained:
    model: Path
    calibration: Path  # .npz of training images: what static int8 calibrates on
    evaluation: Path  # .npz of held-out images: what pack measures agreement on
    test_y: np.ndarray
    accuracy: float  # of the numpy network on the held-out images


def build(out: Path, cfg: Config = Config(), calibration_rows: int = 256) -> Trained:
    """Train, export and write the model and its data beside it (out/digits.onnx, *.npz)."""
    data = load(cfg.upsample, cfg.seed)
    net = train(cfg, data)
    out.mkdir(parents=True, exist_ok=True)
    model = out / "digits.onnx"
    onnx.save(to_onnx(net), model)
    cal, ev = out / "calibration.npz", out / "evaluation.npz"
    np.savez(cal, **{INPUT: data.train_x[:calibration_rows]})
    np.savez(ev, **{INPUT: data.test_x})
    return Trained(model, cal, ev, data.test_y, accuracy(net.predict(data.test_x), data.test_y))
