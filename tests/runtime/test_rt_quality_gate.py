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
    ],
)
def test_a_gate_that_cannot_work_stops_serve_with_the_flag_named(
    models: Models, tmp_path: Path, extra: list[str], message: str
) -> None:
    server = Server(["--model", str(models.tabular), "--sha256", sha256_of(models.tabular), "--name", "t", *extra],
                    log=tmp_path / "log")
    log = server.refused()
    assert message in log, log
