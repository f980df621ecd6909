"""Model quality at the edge on a real server: a profile `pack` wrote, traffic over real HTTP, PSI read
from /metrics. The same distribution as the profile's data stays under the watch threshold; a shifted one
crosses the alert threshold. Deterministic: fixed seeds, counts of rows, no timing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import models_zoo
from edge_runtime.core import quality
from edge_runtime.pack.packer import PackOptions, pack

from .conftest import Models, Server, json_infer_body, metric_value

pytestmark = pytest.mark.runtime

Serve = Callable[..., Server]
FEATURES = 16
ROWS, BATCH = 3000, 25


def _rows(seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((ROWS, FEATURES)) + shift).astype(np.float32)


@pytest.fixture(scope="module")
def packed(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pack` on 3000 rows of the reference distribution: the folder holding quality-profile.json."""
    d = tmp_path_factory.mktemp("packed")
    np.savez(d / "eval.npz", features=_rows(seed=100))
    out = d / "out"
    pack(PackOptions(model=models.tabular, output=out, eval_data=d / "eval.npz", precisions=["fp32"], runs=2, warmup=0))
    return out


def _send(server: Server, x: np.ndarray) -> None:
    for k in range(0, len(x), BATCH):
        r = server.post("/v2/models/t/infer", json_infer_body(models_zoo.TABULAR_INPUT, x[k : k + BATCH]))
        assert r.status == 200, r.body


def _psi(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("edgeai_quality_psi{"):
            labels = dict(kv.split("=") for kv in line[line.index("{") + 1 : line.index("}")].split(","))
            out[labels["signal"].strip('"'), labels["name"].strip('"')] = float(line.rsplit(" ", 1)[1])
    return out


def test_psi_stays_low_on_the_reference_distribution_and_crosses_on_a_shifted_one(
    serve: Serve, models: Models, packed: Path
) -> None:
    server = serve(
        packed / "tabular.fp32.onnx", "t", "--quality-profile", str(packed / "quality-profile.json"),
        "--quality-window-rows", str(ROWS),
    )
    assert _psi(server.metrics()) == {}  # no rows yet: no judgement

    _send(server, _rows(seed=1))  # same distribution, other rows
    text = server.metrics()
    psi = _psi(text)
    features = {("feature", f"features[{j}]") for j in range(FEATURES)}
    outputs = {("confidence", "probabilities"), ("margin", "probabilities"), ("class", "probabilities")}
    assert set(psi) == outputs | features
    assert max(psi.values()) < quality.PSI_WATCH, psi
    assert metric_value(text, "edgeai_quality_window_rows", {"model": "t"}) >= ROWS * 0.9
    assert metric_value(text, "edgeai_quality_confidence_count", {"model": "t", "output": "probabilities"}) == ROWS
    assert metric_value(text, "edgeai_quality_predictions_total", {"model": "t"}) == ROWS
    assert abs(metric_value(text, "edgeai_quality_feature_mean", {"model": "t", "feature": "features[0]"})) < 0.1

    _send(server, _rows(seed=2, shift=1.0))  # every feature's mean moved by one standard deviation
    psi = _psi(server.metrics())
    assert min(psi["feature", f"features[{j}]"] for j in range(FEATURES)) > quality.PSI_ALERT, psi


def test_no_quality_exports_no_quality_series(serve: Serve, models: Models) -> None:
    server = serve(models.tabular, "t", "--no-quality")
    _send(server, _rows(seed=3)[:50])
    assert "edgeai_quality_" not in server.metrics()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (json.dumps({"format": "edgeai.quality-profile/v0"}).encode(), "format: must be"),
        (None, "does not fit the model: output 'probabilities' (5 classes)"),
    ],
)
def test_a_bad_profile_stops_serve_with_the_reason(
    models: Models, packed: Path, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "profile.json"
    if content is None:  # a valid profile of another model: a 5-class classifier
        doc = json.loads((packed / "quality-profile.json").read_text())
        doc["outputs"][0]["classes"] = 5
        content = json.dumps(doc).encode()
    path.write_bytes(content)
    server = Server(["--model", str(models.tabular), "--sha256", _sha(models.tabular), "--name", "t",
                     "--quality-profile", str(path)], log=tmp_path / "log")
    log = server.refused()
    assert message in log, log


def _sha(p: Path) -> str:
    from .conftest import sha256_of

    return sha256_of(p)
