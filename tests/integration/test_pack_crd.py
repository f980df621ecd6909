"""The EdgeModel that `pack` writes is accepted by the real CRD schema on a real API server.

Server-side dry-run: the API server validates against crds/edgemodel.yaml's
OpenAPI schema (patterns, enums, required fields) without storing anything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge_runtime.artifacts import integrity
from edge_runtime.models_zoo import build_cnn, build_tabular
from edge_runtime.pack.packer import PackOptions, pack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "edgemodel.yaml"
CRD_NAME = "edgemodels.edgeai.io"


@pytest.fixture(scope="module")
def edgemodel_crd(kube: Any) -> None:
    if not CRD.exists():
        pytest.skip(f"{CRD.relative_to(ROOT)} is not written yet")
    kube.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=edgeai-tests", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    # Established can precede discovery by a moment; dry-run needs the REST mapping.
    deadline = time.monotonic() + 30
    while not kube.ok("get", "edgemodels.edgeai.io", "-A") and time.monotonic() < deadline:
        time.sleep(0.5)


def dry_run(kube: Any, manifest: dict[str, Any], namespace: str) -> Any:
    return kube.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(manifest), check=False
    )


def packed(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    out = tmp_path / "out"
    opts: dict[str, Any] = {"samples": 16, "runs": 2, "warmup": 0, **kw}
    pack(PackOptions(output=out, **opts))
    m = yaml.safe_load((out / "edgemodel.yaml").read_text())
    assert isinstance(m, dict)
    return m


def test_plain_manifest_is_accepted(kube: Any, edgemodel_crd: None, namespace: str, tmp_path: Path) -> None:
    model = build_tabular(tmp_path / "tabular.onnx")
    m = packed(tmp_path, model=model, base_uri="https://models.example.com/tabular/", version="1.0.0")
    p = dry_run(kube, m, namespace)
    assert p.returncode == 0, p.stderr
    stored = json.loads(p.stdout)
    # Nothing pruned by the schema: every field pack writes is a field the CRD knows.
    assert stored["spec"]["variants"] == m["spec"]["variants"]
    assert stored["spec"]["source"] == m["spec"]["source"]


def test_signed_encrypted_manifest_is_accepted(kube: Any, edgemodel_crd: None, namespace: str, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(integrity.private_key_pem(integrity.generate_private_key("ecdsa-p256")))
    aes = tmp_path / "aes.key"
    aes.write_bytes(integrity.generate_encryption_key())
    model = build_cnn(tmp_path / "cnn.onnx")
    m = packed(tmp_path, model=model, base_uri="http://10.0.0.5:8000/m", sign_key=key, encryption_key=aes)
    p = dry_run(kube, m, namespace)
    assert p.returncode == 0, p.stderr
    stored = json.loads(p.stdout)
    for field in ("signature", "encryption", "variants", "source"):
        assert stored["spec"][field] == m["spec"][field], field


@pytest.mark.parametrize("legacy", [False, True], ids=["openssf", "digest"])
def test_manifest_with_its_signed_quality_profile_is_accepted(
    kube: Any, edgemodel_crd: None, namespace: str, tmp_path: Path, legacy: bool
) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(integrity.private_key_pem(integrity.generate_private_key("ecdsa-p256")))
    model = build_tabular(tmp_path / "tabular.onnx")
    np.savez(tmp_path / "eval.npz", features=np.random.default_rng(1).standard_normal((200, 16)).astype(np.float32))
    m = packed(tmp_path, model=model, base_uri="https://models.example.com/t/", sign_key=key,
               eval_data=tmp_path / "eval.npz", legacy_signature=legacy, precisions=["fp32"])
    assert ("signature" in m["spec"]["qualityProfile"]) == legacy
    p = dry_run(kube, m, namespace)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["spec"]["qualityProfile"] == m["spec"]["qualityProfile"]


def test_schema_rejects_what_pack_would_never_write(
    kube: Any, edgemodel_crd: None, namespace: str, tmp_path: Path
) -> None:
    # The positive tests only mean something if the schema does check: a broken digest must be refused.
    model = build_tabular(tmp_path / "tabular.onnx")
    m = packed(tmp_path, model=model, base_uri="https://models.example.com/t/", precisions=["fp32", "int8"])
    bad = json.loads(json.dumps(m))
    bad["spec"]["variants"][0]["sha256"] = "NOT-A-DIGEST"
    p = dry_run(kube, bad, namespace)
    assert p.returncode != 0
    assert "sha256" in p.stderr
    # Why pack keeps fp32 out of variants[]: the source repeated as a variant is refused.
    bad = json.loads(json.dumps(m))
    bad["spec"]["variants"].append(
        {**bad["spec"]["source"], "name": "fp32", "precision": "fp32", "accelerators": ["cpu"]}
    )
    p = dry_run(kube, bad, namespace)
    assert p.returncode != 0
    assert "must differ from spec.source.sha256" in p.stderr


def test_pushed_manifest_is_accepted_and_the_schema_names_the_oci_form(
    kube: Any, edgemodel_crd: None, namespace: str, tmp_path: Path
) -> None:
    from tests.runtime.oci_registry import REGISTRY_BIN, running_registry

    if REGISTRY_BIN is None:
        pytest.skip("needs Debian's docker-registry (make test installs it)")
    model = build_tabular(tmp_path / "tabular.onnx")
    (tmp_path / "reg").mkdir()
    with running_registry(tmp_path / "reg") as reg:
        m = packed(tmp_path, model=model, push=f"oci://{reg.addr}/models/tabular:1.0", plain_http=True,
                   pull_secret="regcred", precisions=["fp32", "int8"], min_agreement=None)
    p = dry_run(kube, m, namespace)
    assert p.returncode == 0, p.stderr
    stored = json.loads(p.stdout)
    for field in ("source", "variants", "registry"):
        assert stored["spec"][field] == m["spec"][field], field
    # What the schema refuses, each with the message naming the problem.
    for uri, says in ((f"oci://{reg.addr}/models/tabular", "oci://HOST[:PORT]/REPOSITORY@sha256:<manifest digest>"),
                      (f"oci://{reg.addr}/Models/t:1", "repository in lowercase"),
                      (f"oci://{reg.addr}/m@sha256:abc", "oci://HOST[:PORT]/REPOSITORY@sha256")):
        bad = json.loads(json.dumps(m))
        bad["spec"]["source"]["uri"] = uri
        p = dry_run(kube, bad, namespace)
        assert p.returncode != 0 and says in p.stderr, (uri, p.stderr)
    bad = json.loads(json.dumps(m))
    bad["spec"]["source"]["uri"] = "https://models.example.com/t.onnx"
    for v in bad["spec"]["variants"]:
        v["uri"] = "https://models.example.com/v.onnx"
    p = dry_run(kube, bad, namespace)
    assert p.returncode != 0 and "spec.registry is for oci:// builds" in p.stderr
