"""Verified start-up, hot swap and rollback, refused loads, readiness judgement, dynamic batching."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime import models_zoo
from edge_runtime.artifacts import integrity

from .conftest import Models, Server, cache_entry, free_port, json_infer_body, metric_value, request, sha256_of

pytestmark = pytest.mark.runtime

Serve = Callable[..., Server]


def _infer(srv: Server, x: np.ndarray, path: str = "/v2/models/m/infer") -> np.ndarray:
    r = srv.post(path, json_infer_body("features", x))
    assert r.status == 200, r.body
    out = r.json()["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


def _exit_code(serve: Serve, model: Path, *extra: str, sha256: str | None = None) -> tuple[int, str]:
    srv = serve(model, "m", *extra, wait=False, sha256=sha256)
    assert srv.proc is not None
    rc = srv.proc.wait(60)
    return rc, srv.log_text()


def test_serve_refuses_to_start_on_digest_mismatch(serve: Serve, models: Models) -> None:
    rc, log = _exit_code(serve, models.tabular, sha256="0" * 64)
    assert rc == 3, log
    assert "DigestMismatch" in log


def test_serve_signature_and_encryption(serve: Serve, models: Models, tmp_path: Path) -> None:
    key = integrity.generate_private_key("ecdsa-p256")
    pub = tmp_path / "pub.pem"
    pub.write_bytes(integrity.public_key_pem(key))
    aes = tmp_path / "aes.key"
    aes.write_bytes(integrity.generate_encryption_key())
    enc = tmp_path / "tabular.enc"
    enc.write_bytes(integrity.encrypt(models.tabular.read_bytes(), aes.read_bytes()))
    digest = sha256_of(enc)
    sig = integrity.sign_digest(key, digest)
    other_sig = integrity.sign_digest(integrity.generate_private_key("ecdsa-p256"), digest)

    rc, log = _exit_code(
        serve, enc, "--public-key-file", str(pub), "--signature", other_sig, "--decryption-key-file", str(aes)
    )
    assert rc == 4, log
    rc, log = _exit_code(serve, enc, "--public-key-file", str(pub), "--signature", sig)
    assert rc != 0 and "MissingKey" in log, log
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(integrity.generate_encryption_key())
    rc, log = _exit_code(
        serve, enc, "--public-key-file", str(pub), "--signature", sig, "--decryption-key-file", str(wrong)
    )
    assert rc == 9, log

    cache = tmp_path / "cache"
    entry, _ = cache_entry(cache, enc)
    srv = serve(
        entry, "m", "--public-key-file", str(pub), "--signature", sig, "--decryption-key-file", str(aes)
    )
    x = models_zoo.sample_inputs("tabular", 2)
    expected = models.session(models.tabular).run(None, {"features": x})[0]
    np.testing.assert_allclose(_infer(srv, x), expected, rtol=1e-6)
    assert srv.get("/v2/models/m").json()["parameters"]["sha256"] == digest
    # No plaintext was written anywhere next to the ciphertext.
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".onnx", ".enc")) == ["tabular.enc"]
    assert sorted(p.name for p in (cache / "sha256").iterdir()) == [digest]
    # With a public key configured, a repository load without a valid signature is refused.
    r = srv.post(
        "/v2/repository/models/m/load",
        {"parameters": {"sha256": digest, "version": "2", "signature": other_sig}},
    )
    assert r.status == 400 and "BadSignature" in r.json()["error"]


def _load(srv: Server, path: Path, version: str, **extra: Any) -> Any:
    # By digest: the runtime reads only its model cache.
    return srv.post(
        "/v2/repository/models/m/load",
        {"parameters": {"sha256": sha256_of(path), "version": version, **extra}},
    )


def test_hot_swap_rollback_and_refused_loads(serve: Serve, models: Models, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for p in (models.tabular, models.tabular2, models.warmup_fails):
        cache_entry(cache, p)
    entry, _ = cache_entry(cache, models.tabular)
    srv = serve(entry, "m", "--model-version", "1")  # the cache is found from the --model path, as in a Pod
    x = models_zoo.sample_inputs("tabular", 3, seed=1)
    v1 = models.session(models.tabular).run(None, {"features": x})[0]
    v2 = models.session(models.tabular2).run(None, {"features": x})[0]
    assert not np.allclose(v1, v2)
    np.testing.assert_allclose(_infer(srv, x), v1, rtol=1e-6)

    # Requests keep flowing during the swap; none may fail.
    stop = threading.Event()
    failures: list[str] = []

    def hammer() -> None:
        while not stop.is_set():
            r = srv.post("/v2/models/m/infer", json_infer_body("features", x))
            if r.status != 200:
                failures.append(r.body.decode())

    t = threading.Thread(target=hammer)
    t.start()
    try:
        assert _load(srv, models.tabular2, "2").status == 200
    finally:
        stop.set()
        t.join(30)
    assert not failures
    np.testing.assert_allclose(_infer(srv, x), v2, rtol=1e-6)
    meta = srv.get("/v2/models/m").json()
    assert meta["parameters"]["sha256"] == sha256_of(models.tabular2)
    assert meta["versions"] == ["2", "1"]
    # The previous version stays loaded and addressable.
    np.testing.assert_allclose(_infer(srv, x, "/v2/models/m/versions/1/infer"), v1, rtol=1e-6)

    # Refused loads leave version 2 serving.
    (cache / "sha256" / ("f" * 64)).write_bytes(models.tabular.read_bytes())  # an entry whose bytes do not match
    bad_digest = srv.post("/v2/repository/models/m/load", {"parameters": {"sha256": "f" * 64, "version": "3"}})
    assert bad_digest.status == 400 and "DigestMismatch" in bad_digest.json()["error"]
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not an onnx model")
    cache_entry(cache, junk)
    r = _load(srv, junk, "3")
    assert r.status == 400 and "InvalidModel" in r.json()["error"]
    r = _load(srv, models.warmup_fails, "3")
    assert r.status == 400 and "WarmupFailed" in r.json()["error"]
    r = srv.post("/v2/repository/models/m/load", {"parameters": {"sha256": "a" * 64}})
    assert r.status == 400 and "does not exist" in r.json()["error"]
    r = srv.post("/v2/repository/models/m/load", {"parameters": {"path": str(junk), "sha256": "XYZ"}})
    assert r.status == 400 and "64 lowercase hex" in r.json()["error"]
    np.testing.assert_allclose(_infer(srv, x), v2, rtol=1e-6)
    assert srv.get("/v2/health/ready").status == 200
    text = srv.metrics()
    assert metric_value(text, "edgeai_model_loads_total", {"model": "m", "outcome": "refused"}) == 4
    assert metric_value(text, "edgeai_verifications_total", {"outcome": "DigestMismatch"}) == 1
    assert metric_value(text, "edgeai_model_info", {"version": "2", "sha256": sha256_of(models.tabular2)}) == 1
    assert metric_value(text, "edgeai_model_info", {"version": "1", "sha256": sha256_of(models.tabular)}) == 0

    # Instant rollback to the kept version, and forward again.
    assert srv.post("/v2/repository/models/m/load", {"parameters": {"rollback": True}}).status == 200
    np.testing.assert_allclose(_infer(srv, x), v1, rtol=1e-6)
    assert srv.get("/v2/models/m").json()["parameters"]["sha256"] == sha256_of(models.tabular)
    assert _load(srv, models.tabular2, "2").status == 200  # promoted from memory, no reload
    np.testing.assert_allclose(_infer(srv, x), v2, rtol=1e-6)

    # Unload: not ready; a bare load brings the last version back.
    assert srv.post("/v2/repository/models/m/unload").status == 200
    assert srv.get("/v2/models/m/ready").status == 400
    r = srv.get("/v2/health/ready")
    assert r.status == 400 and "no model" in r.headers["x-edgeai-not-ready"]
    assert srv.post("/v2/models/m/infer", json_infer_body("features", x)).status == 404
    assert srv.post("/v2/repository/models/m/unload").status == 404
    assert srv.post("/v2/repository/models/m/load").status == 200
    np.testing.assert_allclose(_infer(srv, x), v2, rtol=1e-6)
    assert srv.get("/v2/health/ready").status == 200


def test_readiness_follows_runtime_error_rate(serve: Serve, models: Models) -> None:
    metrics_port = free_port()
    srv = serve(
        models.batch2_fails, "g", "--error-window-s", "60", "--max-error-rate", "0.5",
        "--metrics-port", str(metrics_port),
    )
    ok = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    # A valid request (the metadata says [-1, 3]) on which the model itself fails: the device's problem.
    boom = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]}
    for _ in range(5):
        assert srv.post("/v2/models/g/infer", ok).status == 200
    # Client mistakes do not count against the runtime.
    for _ in range(30):
        assert srv.post("/v2/models/g/infer", b"{nope").status == 400
    assert srv.get("/v2/health/ready").status == 200
    for _ in range(25):
        r = srv.post("/v2/models/g/infer", boom)
        assert r.status == 500 and "model 'g' failed" in r.json()["error"], r.body
    r = srv.get("/v2/health/ready")
    assert r.status == 400
    assert "25 of the last 30 requests failed" in r.headers["x-edgeai-not-ready"]
    assert srv.get("/v2/health/live").status == 200  # alive, just not fit for traffic
    # /metrics lives on its own port here, and still reads readiness at scrape time.
    assert srv.get("/metrics").status == 404
    text = request(metrics_port, "GET", "/metrics").body.decode()
    assert metric_value(text, "edgeai_ready") == 0
    assert metric_value(text, "edgeai_requests_total", {"model": "g", "outcome": "error"}) == 25


@pytest.mark.parametrize("worker", [False, True], ids=["as-timed", "worker-thread-spinning-in-run"])
def test_dynamic_batching_combines_and_splits(
    serve: Serve, models: Models, worker: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches answer as separate runs would; also with the model forced into the worker thread (where the
    batch is joined) and onnxruntime's workers spinning within each run (--intra-op-spinning in-run)."""
    extra: list[str] = []
    if worker:
        monkeypatch.setenv("EDGEAI_RUN_INLINE", "0")
        extra = ["--intra-op-spinning", "in-run"]
    srv = serve(models.cnn, "c", "--max-batch-size", "16", "--max-batch-delay-ms", "30", *extra)
    params = srv.get("/v2/models/c").json()["parameters"]
    assert params["batching"] is True
    if worker:
        assert params["run_inline"] is False
    sess = models.session(models.cnn)
    inputs = [models_zoo.sample_inputs("cnn", 1 + i % 3, seed=100 + i) for i in range(12)]
    results: dict[int, np.ndarray] = {}
    errors: list[str] = []
    barrier = threading.Barrier(len(inputs))

    def one(i: int) -> None:
        barrier.wait(10)
        r = srv.post("/v2/models/c/infer", json_infer_body(models_zoo.CNN_INPUT, inputs[i]))
        if r.status != 200:
            errors.append(r.body.decode())
            return
        out = r.json()["outputs"][0]
        results[i] = np.array(out["data"], np.float32).reshape(out["shape"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for i, x in enumerate(inputs):
        np.testing.assert_allclose(results[i], sess.run(None, {models_zoo.CNN_INPUT: x})[0], rtol=1e-5, atol=1e-6)
    text = srv.metrics()
    runs = metric_value(text, "edgeai_batch_size_count", {"model": "c"})
    rows = metric_value(text, "edgeai_batch_size_sum", {"model": "c"})
    assert rows == sum(x.shape[0] for x in inputs)
    assert runs < len(inputs), "no two requests were combined"


def test_busy_polling_after_answers_is_counted_bounded_and_off_at_zero(serve: Serve, models: Models) -> None:
    """By default the loop polls for a moment after each answer (--busy-poll-us 500): the time it spent is in
    edgeai_busy_poll_seconds_total, answers are unchanged, and with no requests it stops (a second's wait
    adds about one window per scrape, not two seconds). --busy-poll-us 0 polls never and shows no such series."""
    x = models_zoo.sample_inputs("tabular", 1, seed=3)
    expected = models.session(models.tabular).run(None, {"features": x})[0]
    on = serve(models.tabular, "t")
    # One client on one keep-alive connection: polling is for a client waiting on one answer at a time (a new
    # connection per request within the window would count as several clients, however fast the machine).
    conn = http.client.HTTPConnection("127.0.0.1", on.port, timeout=30)
    body = json.dumps(json_infer_body("features", x)).encode()
    for _ in range(20):
        conn.request("POST", "/v2/models/t/infer", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200
        out = json.loads(r.read())["outputs"][0]["data"]
        np.testing.assert_allclose(np.array(out, np.float32).reshape(1, 3), expected, rtol=1e-6)
    conn.close()
    first = metric_value(on.metrics(), "edgeai_busy_poll_seconds_total")
    assert first > 0
    time.sleep(2.0)
    second = metric_value(on.metrics(), "edgeai_busy_poll_seconds_total")
    # Polling on through the pause would add ~2 s; a stretch after the scrape adds 0.5 ms (the bound leaves
    # room for the process being descheduled mid-stretch on a busy machine: the metric is wall time).
    assert first <= second < first + 1.0, "polling went on without requests"
    off = serve(models.tabular, "t", "--busy-poll-us", "0")
    assert off.post("/v2/models/t/infer", json_infer_body("features", x)).status == 200
    assert "edgeai_busy_poll_seconds" not in off.metrics()
