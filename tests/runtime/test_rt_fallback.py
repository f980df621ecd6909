"""Edge-cloud fallback against a second real v2 server standing in for the cloud."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import models_zoo

from .conftest import Models, Server, free_port, json_infer_body, metric_value

pytestmark = pytest.mark.runtime

Serve = Callable[..., Server]


def _split_inputs(models: Models, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One CNN input the edge is unsure about, one it is sure about."""
    sess = models.session(models.cnn)
    x = models_zoo.sample_inputs("cnn", 64, seed=3)
    conf = sess.run(None, {models_zoo.CNN_INPUT: x})[0].max(axis=1)
    hard, easy = np.argmin(conf), np.argmax(conf)
    assert conf[hard] < threshold < conf[easy], conf
    return x[hard : hard + 1], x[easy : easy + 1]


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_fallback_breaker_durable_queue_and_drain(serve: Serve, models: Models, tmp_path: Path) -> None:
    cloud_port = free_port()
    # The cloud serves a different model under the same name, so answers show where they came from.
    cloud_model = models_zoo.build_cnn(tmp_path / "cloud.onnx", seed=42)
    cloud = serve(cloud_model, "c", port=cloud_port)
    cloud_sess = models.session(cloud_model)
    edge_sess = models.session(models.cnn)
    sure = edge_sess.run(None, {models_zoo.CNN_INPUT: models_zoo.sample_inputs("cnn", 64, seed=3)})[0].max(axis=1)
    threshold = float(np.median(sure))
    hard, easy = _split_inputs(models, threshold)
    queue_dir = tmp_path / "queue"
    edge_args = (
        "--fallback-url",
        cloud.url,
        "--fallback-threshold",
        f"{threshold:.6f}",
        "--fallback-timeout-ms",
        "2000",
        "--fallback-queue",
        str(queue_dir),
        "--fallback-queue-max-items",
        "4",
    )
    edge = serve(models.cnn, "c", *edge_args)

    # Confident: answered at the edge. Unsure: answered by the cloud.
    r = edge.post("/v2/models/c/infer", json_infer_body(models_zoo.CNN_INPUT, easy))
    assert r.status == 200 and "x-edgeai-source" not in r.headers
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], edge_sess.run(None, {"input": easy})[0][0], rtol=1e-5)
    r = edge.post("/v2/models/c/infer", json_infer_body(models_zoo.CNN_INPUT, hard))
    assert r.status == 200 and r.headers["x-edgeai-source"] == "cloud"
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], cloud_sess.run(None, {"input": hard})[0][0], rtol=1e-5)
    cloud_seen = metric_value(cloud.metrics(), "edgeai_requests_total", {"model": "c"})
    assert cloud_seen == 1
    # The cloud answered a hard example: whether its top class matched the edge's is a label-less accuracy signal.
    edge_top, cloud_top = (s.run(None, {"input": hard})[0].argmax() for s in (edge_sess, cloud_sess))
    agreed = float(edge_top == cloud_top)
    text = edge.metrics()
    comparisons = "edgeai_quality_cloud_comparisons_total"
    assert metric_value(text, comparisons, {"model": "c"}) == 1
    assert metric_value(text, comparisons, {"model": "c", "agreement": "agree"}) == agreed
    assert metric_value(text, "edgeai_quality_cloud_agreement_ratio", {"model": "c"}) == agreed
    assert metric_value(text, "edgeai_quality_fallback_ratio", {"model": "c"}) == 0.5  # one easy, one hard

    # Cloud gone: edge answers, marked; after a few failures the breaker opens.
    cloud.stop()
    outcomes = []
    for _ in range(5):
        r = edge.post("/v2/models/c/infer", json_infer_body(models_zoo.CNN_INPUT, hard))
        assert r.status == 200
        doc = r.json()
        assert doc["parameters"]["edgeai_source"] == "edge"
        np.testing.assert_allclose(doc["outputs"][0]["data"], edge_sess.run(None, {"input": hard})[0][0], rtol=1e-5)
        outcomes.append(doc["parameters"]["edgeai_fallback"])
    # The first waits for the cloud; the background drainer's failures count too, so the
    # breaker opens within three failed calls and the rest do not wait.
    assert outcomes[0] == "cloud_unreachable"
    assert outcomes[-2:] == ["breaker_open"] * 2
    assert set(outcomes) == {"cloud_unreachable", "breaker_open"}
    text = edge.metrics()
    assert metric_value(text, "edgeai_fallback_breaker_state") == 2
    assert metric_value(text, "edgeai_fallbacks_total", {"outcome": "breaker_open"}) == outcomes.count("breaker_open")
    # The request whose example pushed the oldest out of the full queue is told so.
    assert doc["parameters"].get("edgeai_hard_examples_dropped") == 1
    # Five hard examples, room for four: the oldest was dropped, and counted.
    assert metric_value(text, "edgeai_hard_examples_queued") == 4
    assert metric_value(text, "edgeai_hard_examples_dropped_total", {"reason": "queue_full"}) == 1

    # kill -9 the edge: the acknowledged examples survive on disk.
    edge.stop(kill=True)
    edge = serve(models.cnn, "c", *edge_args)
    assert metric_value(edge.metrics(), "edgeai_hard_examples_queued") == 4

    # The cloud comes back on the same address: the queue drains to it.
    cloud = serve(cloud_model, "c", port=cloud_port)
    assert _wait(lambda: metric_value(edge.metrics(), "edgeai_hard_examples_queued") == 0, 120), edge.metrics()
    assert metric_value(edge.metrics(), "edgeai_hard_examples_drained_total") == 4
    assert metric_value(cloud.metrics(), "edgeai_requests_total", {"model": "c"}) == 4
    assert metric_value(edge.metrics(), "edgeai_fallback_breaker_state") == 0
    r = edge.post("/v2/models/c/infer", json_infer_body(models_zoo.CNN_INPUT, hard))
    assert r.headers.get("x-edgeai-source") == "cloud"


def test_fallback_to_a_grpc_only_cloud(serve: Serve, models: Models, tmp_path: Path) -> None:
    """The typed request is re-encoded for a cloud that speaks only gRPC; queued examples drain over gRPC too."""
    cloud_grpc = free_port()
    cloud_model = models_zoo.build_cnn(tmp_path / "cloud.onnx", seed=42)
    cloud = serve(cloud_model, "c", "--grpc-port", str(cloud_grpc))
    cloud_sess = models.session(cloud_model)
    edge_sess = models.session(models.cnn)
    sure = edge_sess.run(None, {models_zoo.CNN_INPUT: models_zoo.sample_inputs("cnn", 64, seed=3)})[0].max(axis=1)
    threshold = float(np.median(sure))
    hard, _ = _split_inputs(models, threshold)
    edge_args = (
        "--fallback-url", f"127.0.0.1:{cloud_grpc}", "--fallback-protocol", "grpc",
        "--fallback-threshold", f"{threshold:.6f}", "--fallback-timeout-ms", "5000",
        "--fallback-queue", str(tmp_path / "queue"),
    )
    edge = serve(models.cnn, "c", *edge_args)
    # The client speaks REST (binary output); the cloud answered over gRPC; the client gets REST binary.
    body = {**json_infer_body(models_zoo.CNN_INPUT, hard), "parameters": {"binary_data_output": True}}
    r = edge.post("/v2/models/c/infer", body)
    assert r.status == 200 and r.headers["x-edgeai-source"] == "cloud", r.body[:300]
    n = int(r.headers["inference-header-content-length"])
    got = np.frombuffer(r.body[n:], "<f4").reshape(1, -1)
    np.testing.assert_allclose(got, cloud_sess.run(None, {"input": hard})[0], rtol=1e-5)
    text = cloud.metrics()
    assert metric_value(text, "edgeai_requests_total", {"model": "c", "protocol": "grpc", "outcome": "ok"}) == 1
    # The cloud goes away: answered at the edge and queued; back on the same port: drained over gRPC.
    cloud.stop()
    r = edge.post("/v2/models/c/infer", json_infer_body(models_zoo.CNN_INPUT, hard))
    assert r.status == 200 and r.json()["parameters"]["edgeai_fallback"] == "cloud_unreachable"
    assert metric_value(edge.metrics(), "edgeai_hard_examples_queued") == 1
    cloud = serve(cloud_model, "c", "--grpc-port", str(cloud_grpc))
    assert _wait(lambda: metric_value(edge.metrics(), "edgeai_hard_examples_queued") == 0, 120), edge.metrics()
    assert metric_value(edge.metrics(), "edgeai_hard_examples_drained_total") == 1
    text = cloud.metrics()
    assert metric_value(text, "edgeai_requests_total", {"model": "c", "protocol": "grpc", "outcome": "ok"}) == 1
