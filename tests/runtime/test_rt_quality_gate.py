"""The rollout quality gate on a real server (edge_runtime/core/quality_gate.py through `serve`): a real
model, a profile `pack` wrote from its calibration-like data, traffic over real HTTP. The good build
passes its gate and afterwards a drift only raises edgeai_quality_breach; a broken build of the same
model (one constant class) fails it: the process exits with EXIT_QUALITY_GATE and the reason in its
termination message, as the operator reads them from Pod status. Deterministic: seeds and counts, no
timing (states are waited on with generous deadlines)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import models_zoo
from edge_runtime.pack.packer import PackOptions, pack
from edgeai_api.exit_codes import EXIT_QUALITY_GATE

from .conftest import Models, Server, json_infer_body, metric_value, sha256_of

pytestmark = pytest.mark.runtime

Serve = Callable[..., Server]
FEATURES, BATCH = 16, 10
MIN_REQUESTS = 40  # 400 rows at BATCH


def _rows(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, FEATURES)) + shift).astype(np.float32)


@pytest.fixture(scope="module")
def packed(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("packed")
    np.savez(d / "eval.npz", features=_rows(3000, seed=100))
    out = d / "out"
    pack(PackOptions(model=models.tabular, output=out, eval_data=d / "eval.npz", precisions=["fp32"], runs=2, warmup=0))
    return out


def _gate(packed: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--quality-profile", str(packed / "quality-profile.json"), "--quality-gate-max-psi", "0.25",
            "--quality-gate-min-requests", str(MIN_REQUESTS), "--quality-gate-state", str(tmp_path / "gate.json"),
            "--termination-log", str(tmp_path / "termination-log"), *extra]


def _send(server: Server, x: np.ndarray) -> None:
    for k in range(0, len(x), BATCH):
        r = server.post("/v2/models/t/infer", json_infer_body(models_zoo.TABULAR_INPUT, x[k : k + BATCH]))
        assert r.status == 200, r.body


def _ready(server: Server) -> tuple[int, str]:
    r = server.get("/v2/health/ready")
    return r.status, r.body.decode()


def test_good_build_waits_for_traffic_passes_and_later_drift_only_raises_the_breach_metric(
    serve: Serve, packed: Path, tmp_path: Path
) -> None:
    server = serve(packed / "tabular.fp32.onnx", "t", *_gate(packed, tmp_path))
    status, body = _ready(server)
    # Wait (the default): not Ready until judged, and says why; traffic still reaches it (the Pod's IP).
    assert status != 200 and "waiting for traffic to judge: 0 of the 40 requests" in body
    _send(server, _rows(MIN_REQUESTS * BATCH, seed=1))
    status, body = _ready(server)
    assert status == 200, body
    assert json.loads((tmp_path / "gate.json").read_text())["state"] == "passed"
    text = server.metrics()
    assert metric_value(text, "edgeai_quality_gate_state", {"model": "t"}) == 1
    assert metric_value(text, "edgeai_quality_breach", {"model": "t", "check": "psi"}) == 0

    _send(server, _rows(1000, seed=2, shift=1.5))  # the data drifts after the gate: a metric, never unready
    assert _ready(server)[0] == 200
    assert metric_value(server.metrics(), "edgeai_quality_breach", {"model": "t", "check": "psi"}) == 1
    assert not (tmp_path / "termination-log").exists()


def test_constant_class_build_fails_its_gate_exits_with_the_reason_and_stays_failed_in_its_pod(
    serve: Serve, packed: Path, tmp_path: Path
) -> None:
    broken = models_zoo.build_tabular(tmp_path / "broken.onnx", constant_class=0)
    server = serve(broken, "t", *_gate(packed, tmp_path, "--quality-gate-min-mean-confidence", "0.5"))
    _send(server, _rows(MIN_REQUESTS * BATCH, seed=1))  # every request answered 200: no error, fast
    proc = server.proc
    assert proc is not None
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # the process may exit during the probe
            _ready(server)  # a probe: the gate is judged on readiness
        time.sleep(0.2)
    assert proc.returncode == EXIT_QUALITY_GATE, server.log_text()
    reason = (tmp_path / "termination-log").read_text()
    assert reason.startswith("quality gate failed after 40 requests: PSI of ") and "(maxPSI 0.25)" in reason
    assert "mean confidence" not in reason  # a constant class is confident: only the divergence shows it
    assert json.loads((tmp_path / "gate.json").read_text()) == {"state": "failed", "reason": reason}

    # The kubelet restarts the container in the same Pod: it does not judge again, it stays not Ready.
    again = serve(broken, "t", *_gate(packed, tmp_path))
    status, body = _ready(again)
    assert status != 200 and reason in body
    assert metric_value(again.metrics(), "edgeai_quality_gate_state", {"model": "t"}) == 2


def test_pass_policy_is_ready_at_once_and_passes_unjudged_without_traffic(
    serve: Serve, packed: Path, tmp_path: Path
) -> None:
    server = serve(packed / "tabular.fp32.onnx", "t",
                   *_gate(packed, tmp_path, "--quality-gate-on-insufficient-traffic", "pass",
                          "--quality-gate-window-s", "0"))
    status, body = _ready(server)
    assert status == 200, body
    doc = json.loads((tmp_path / "gate.json").read_text())
    assert doc["state"] == "passed" and "without the quality check: 0 of the 40 requests" in doc["reason"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--quality-gate-max-psi", "0.2"], "--quality-gate-max-psi needs --quality-profile"),
        (["--quality-gate-min-mean-confidence", "1.5"], "--quality-gate-min-mean-confidence must be within 0..1"),
        (["--quality-gate-min-mean-confidence", "0.5", "--no-quality"], "drop --no-quality"),
        (["--quality-gate-min-mean-confidence", "0.5", "--quality-gate-min-requests", "0"], "must be >= 1"),
        (["--quality-gate-min-mean-confidence", "0.5", "--quality-gate-max-psi-previous", "0.2"],
         "--quality-gate-max-psi-previous needs --quality-window-dir"),
        (["--quality-window-dir", "/tmp/w", "--revision", "r1"], "--quality-window-dir needs --quality-profile"),
    ],
)
def test_a_gate_that_cannot_work_stops_serve_with_the_flag_named(
    models: Models, tmp_path: Path, extra: list[str], message: str
) -> None:
    server = Server(["--model", str(models.tabular), "--sha256", sha256_of(models.tabular), "--name", "t", *extra],
                    log=tmp_path / "log")
    log = server.refused()
    assert message in log, log


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--quality-window-dir needs --revision"),
        (["--revision", "../up"], "--revision must be 1-64 letters"),
        (["--revision", "r1", "--quality-window-interval-s", "0"], "--quality-window-interval-s must be > 0"),
    ],
)
def test_a_window_directory_that_cannot_work_stops_serve_with_the_flag_named(
    packed: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    model = packed / "tabular.fp32.onnx"
    server = Server(["--model", str(model), "--sha256", sha256_of(model), "--name", "t", "--quality-profile",
                     str(packed / "quality-profile.json"), "--quality-window-dir", str(tmp_path / "w"), *extra],
                    log=tmp_path / "log")
    log = server.refused()
    assert message in log, log


def _revision(packed: Path, tmp_path: Path, windows: Path, revision: str, *extra: str) -> list[str]:
    """One revision's Pod: its own gate state (its emptyDir), the node's window directory shared by all."""
    pod = tmp_path / revision
    pod.mkdir()
    return ["--quality-profile", str(packed / "quality-profile.json"), "--quality-gate-max-psi-previous", "0.25",
            "--quality-gate-min-requests", str(MIN_REQUESTS), "--quality-gate-state", str(pod / "gate.json"),
            "--termination-log", str(pod / "termination-log"), "--quality-window-dir", str(windows),
            "--revision", revision, *extra]


def _verdict(server: Server, state: Path) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while not state.exists() and time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # the process may exit during the probe
            _ready(server)  # a probe: the gate is judged on readiness
        time.sleep(0.1)
    doc: dict[str, str] = json.loads(state.read_text())
    return doc


def test_a_new_revision_is_compared_with_the_previous_revisions_window_on_the_same_node(
    serve: Serve, packed: Path, tmp_path: Path
) -> None:
    windows = tmp_path / "node-cache" / "quality-windows" / "ns" / "idep"
    traffic = _rows(MIN_REQUESTS * BATCH, seed=1, shift=1.0)  # drifted since calibration: both builds see it

    # Revision a: the first with the gate on this node, nothing to compare with; passes, then keeps its window.
    a = serve(packed / "tabular.fp32.onnx", "t",
              *_revision(packed, tmp_path, windows, "rev-a", "--quality-window-interval-s", "0.2"))
    _send(a, traffic)
    doc = _verdict(a, tmp_path / "rev-a" / "gate.json")
    assert doc["state"] == "passed", doc
    assert doc["reason"].endswith("(no previous revision's window on this device: maxPSIPrevious not judged)")
    deadline = time.monotonic() + 60
    while not (windows / "rev-a.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # written every 0.2 s once the gate passed
    assert (windows / "rev-a.json").exists(), a.log_text()
    text = a.metrics()
    assert metric_value(text, "edgeai_quality_previous_window", {"model": "t"}) == 0
    assert metric_value(text, "edgeai_quality_window_writes_total", {"outcome": "ok"}) >= 1
    a.stop()  # the Pod goes: its window stays on the node

    # Revision b: a broken build (one constant class) on the same traffic fails against revision a's window.
    broken = models_zoo.build_tabular(tmp_path / "broken.onnx", constant_class=0)
    b = serve(broken, "t", *_revision(packed, tmp_path, windows, "rev-b"))
    _send(b, traffic)
    doc = _verdict(b, tmp_path / "rev-b" / "gate.json")
    assert b.proc is not None and b.proc.wait(60) == EXIT_QUALITY_GATE, b.log_text()
    reason = (tmp_path / "rev-b" / "termination-log").read_text()
    assert doc == {"state": "failed", "reason": reason}
    assert reason.startswith("quality gate failed after 40 requests: PSI of ")
    assert "against the previous revision's window (revision rev-a) is " in reason
    assert reason.endswith("(maxPSIPrevious 0.25)")
    assert not (windows / "rev-b.json").exists()  # a failed build never becomes the next one's yardstick

    # Revision c: a build equal to a's passes on more of the drifted traffic, and says what it compared with.
    c = serve(packed / "tabular.fp32.onnx", "t", *_revision(packed, tmp_path, windows, "rev-c"))
    _send(c, _rows(MIN_REQUESTS * BATCH, seed=2, shift=1.0))
    doc = _verdict(c, tmp_path / "rev-c" / "gate.json")
    assert doc["state"] == "passed", doc
    assert doc["reason"].endswith("(compared with the previous revision's window: revision rev-a)")
    text = c.metrics()
    assert metric_value(text, "edgeai_quality_previous_window", {"model": "t"}) == 1
    assert 0 < metric_value(text, "edgeai_quality_psi_previous", {"model": "t", "signal": "class"}) < 0.25
    assert metric_value(text, "edgeai_quality_psi", {"model": "t", "signal": "feature", "name": "features[0]"}) > 0.25
    c.stop()
    assert (windows / "rev-c.json").exists()  # written at shutdown
