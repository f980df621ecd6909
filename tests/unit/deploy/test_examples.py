"""examples/ stays a working set: digests match the deterministic models, the signature
verifies, every manifest is of a known kind and listed in the kustomization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edge_runtime.artifacts import integrity
from edge_runtime.models_zoo import build_cnn, build_tabular

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def docs() -> dict[str, list[dict[str, Any]]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
            for p in sorted(EXAMPLES.glob("*.yaml")) if p.name != "kustomization.yaml"}


def test_every_manifest_is_listed_and_of_a_known_kind() -> None:
    kust = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(docs())
    kinds = {d["kind"] for ds in docs().values() for d in ds}
    assert kinds == {"Namespace", "Secret", "EdgeModel", "InferenceDeployment", "EdgeDevice"}


def test_model_digests_and_signature_match_the_built_models(tmp_path: Path) -> None:
    built = {"tabular.onnx": build_tabular(tmp_path / "tabular.onnx"), "cnn.onnx": build_cnn(tmp_path / "cnn.onnx")}
    models = [d for ds in docs().values() for d in ds if d["kind"] == "EdgeModel"]
    secrets = {d["metadata"]["name"]: d for ds in docs().values() for d in ds if d["kind"] == "Secret"}
    assert len(models) == 2
    for m in models:
        src = m["spec"]["source"]
        d = integrity.hash_file(built[src["uri"].rsplit("/", 1)[1]])
        assert (src["sha256"], src["size"]) == (d.sha256, d.size), m["metadata"]["name"]
        sig = m["spec"].get("signature")
        if sig:
            ref = sig["publicKeySecretRef"]
            pem = secrets[ref["name"]]["stringData"][ref["key"]].encode()
            integrity.verify_digest_signature(pem, src["sha256"], sig["value"])


def test_deployments_name_models_that_exist() -> None:
    all_docs = [d for ds in docs().values() for d in ds]
    models = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in all_docs if d["kind"] == "EdgeModel"}
    for d in all_docs:
        if d["kind"] == "InferenceDeployment":
            assert (d["metadata"]["namespace"], d["spec"]["model"]) in models
