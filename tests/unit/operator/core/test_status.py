"""EdgeModel and EdgeDevice status folding, and when a model needs (re)verification."""

from __future__ import annotations

from typing import Any

from edge_operator.core import conditions
from edge_operator.core.status import (
    ArtifactCheck,
    ModelCheck,
    device_status,
    model_status,
    needs_verification,
    previously_verified,
    verifying_status,
)
from edge_operator.core.views import child_info, device_info, model_info, node_info

SRC = "a" * 64
NOW = "2026-01-01T00:00:00Z"


def model(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "m", "namespace": "ns", "generation": generation},
            "spec": {"source": {"uri": "https://x/m.onnx", "sha256": SRC},
                     "variants": [{"name": "int8", "precision": "int8", "uri": "https://x/i", "sha256": "b" * 64,
                                   "accelerators": ["npu"]}]},
            "status": status or {}}


def test_verified_status_then_nothing_more_to_do() -> None:
    m = model_info(model())
    assert needs_verification(m)
    check = ModelCheck(ArtifactCheck("default", True, SRC, 10),
                       (ArtifactCheck("int8", False, "c" * 64, 9, "DigestMismatch", "sha256 is c..."),),
                       inputs=({"name": "x", "datatype": "FP32", "shape": [-1, 3]},), outputs=(), signed=True)
    st = model_status(m, check, NOW)
    assert st["phase"] == "Verified" and st["sha256"] == SRC and st["size"] == 10 and st["verifiedAt"] == NOW
    v = conditions.find(st["conditions"], "Verified")
    assert v is not None and v["status"] == "True" and "signature valid" in v["message"]
    assert "1/2" not in v["message"] and "0/1 variants" in v["message"]
    assert st["variants"][0]["reason"] == "DigestMismatch"
    done = model_info(model(st))
    assert done.verified and not needs_verification(done)
    assert not done.variants[0].verified
    assert previously_verified(done) == {"default": SRC}


def test_unreachable_is_retried_digest_mismatch_is_final() -> None:
    m = model_info(model())
    st = model_status(m, ModelCheck(ArtifactCheck("default", False, reason="Unreachable", message="refused")), NOW)
    assert st["phase"] == "Retrying" and needs_verification(model_info(model(st)))
    st = model_status(m, ModelCheck(ArtifactCheck("default", False, "f" * 64, 3, "DigestMismatch", "x")), NOW)
    failed = model_info(model(st))
    assert st["phase"] == "Failed" and not needs_verification(failed) and failed.state == "Failed"


def test_new_generation_needs_verification_and_verifying_is_shown() -> None:
    st = model_status(model_info(model()), ModelCheck(ArtifactCheck("default", True, SRC, 1)), NOW)
    m2 = model_info(model(st, generation=2))
    assert needs_verification(m2) and not m2.verified and m2.state == "Pending"
    v = verifying_status(m2, NOW)
    assert v["phase"] == "Verifying" and conditions.find(v["conditions"], "Verified")["status"] == "Unknown"  # type: ignore[index]


def node_body(ready: str, hb: str) -> dict[str, Any]:
    return {"metadata": {"name": "edge-0", "uid": "u", "labels": {"node-role.kubernetes.io/edge": "",
                                                                 "kubernetes.io/arch": "amd64"}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi"},
                       "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
                                       "lastHeartbeatTime": hb}]}}


def test_device_status_online_serving_and_throttled_heartbeat() -> None:
    dev = device_info({"metadata": {"name": "edge-0", "generation": 1}, "spec": {"nodeName": "edge-0"}})
    child = child_info({
        "metadata": {"name": "d-edge-0", "namespace": "ns", "generation": 1,
                     "ownerReferences": [{"kind": "InferenceDeployment", "name": "d", "uid": "x", "controller": True}],
                     "annotations": {"edgeai.io/device": "edge-0", "edgeai.io/model": "m",
                                     "edgeai.io/model-sha256": SRC, "edgeai.io/variant": "default"}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                   "availableReplicas": 1}})
    assert child is not None
    st = device_status(dev, node_info(node_body("True", "2026-01-01T00:00:00Z")), [child], NOW, 60)
    assert st["online"] is True and st["capabilities"]["arch"] == "amd64" and st["servingCount"] == 1
    assert st["serving"][0] == {"inferenceDeployment": "ns/d", "deployment": "d-edge-0", "model": "m",
                                "phase": "Ready", "variant": "default", "sha256": SRC}
    dev2 = device_info({"metadata": {"name": "edge-0", "generation": 1}, "spec": {"nodeName": "edge-0"},
                        "status": st})
    # 30 s later: same online state, heartbeat within the resolution: nothing changes.
    st2 = device_status(dev2, node_info(node_body("True", "2026-01-01T00:00:30Z")), [child], NOW, 60)
    assert st2 == st
    # Offline: written at once, and what it serves shows Offline.
    st3 = device_status(dev2, node_info(node_body("Unknown", "2026-01-01T00:00:30Z")), [child], NOW, 60)
    assert st3["online"] is False and st3["lastHeartbeat"] == "2026-01-01T00:00:30Z"
    assert st3["serving"][0]["phase"] == "Offline"
    gone = device_status(dev2, None, [], NOW, 60)
    assert conditions.find(gone["conditions"], "Online")["reason"] == "NodeNotFound"  # type: ignore[index]


def test_reverify_request_is_checked_afresh_and_echoed() -> None:
    st = model_status(model_info(model()), ModelCheck(ArtifactCheck("default", True, SRC, 1)), NOW)
    body = model(st)
    assert not needs_verification(model_info(body))
    body["metadata"]["annotations"] = {"edgeai.io/reverify": "2026-01-01T00:01:00Z"}
    asked = model_info(body)
    assert needs_verification(asked) and previously_verified(asked) == {}  # everything is fetched again
    done = model_status(asked, ModelCheck(ArtifactCheck("default", True, SRC, 1)), NOW)
    assert done["observedReverify"] == "2026-01-01T00:01:00Z"
    answered = model(done)
    answered["metadata"]["annotations"] = body["metadata"]["annotations"]
    assert not needs_verification(model_info(answered))


def test_oci_builds_carry_the_registry_access_and_status_records_the_manifest() -> None:
    body = model()
    body["spec"]["source"]["uri"] = "oci://reg.example/models/m:prod"
    body["spec"]["registry"] = {"pullSecretRef": {"name": "regcred"}, "plainHTTP": True}
    m = model_info(body)
    assert (m.source.pull_secret, m.source.plain_http) == ("regcred", True)
    # The https variant of the same model does not get them: its workload stays as it was.
    assert (m.variants[0].pull_secret, m.variants[0].plain_http) == (None, False)
    mdigest = "sha256:" + "e" * 64
    check = ModelCheck(ArtifactCheck("default", True, SRC, 10, manifest=mdigest),
                       (ArtifactCheck("int8", True, "b" * 64, 9),))
    st = model_status(m, check, NOW)
    assert st["manifestDigest"] == mdigest and "manifestDigest" not in st["variants"][0]
