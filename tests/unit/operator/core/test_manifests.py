"""Model server Pod manifests: pinning, tolerations, CLI contract, security, labels, digest."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edge_operator.core.manifests import (
    Owner,
    SecretRef,
    WorkloadInputs,
    child_name,
    child_pod,
    edge_device_for_node,
    label_value,
    surges,
)
from edge_operator.core.placement import Artifact
from edgeai_api import constants as c
from edgeai_api.inferencedeployment import FallbackSpec, RuntimeSpec
from edgeai_api.serde import parse

H = "c" * 64
ART = Artifact("int8", "int8", "https://models.example/m-int8.onnx", H, size=1234, signature="c2lnbmF0dXJl",
               accelerators=("npu",), verified=True)
INP = WorkloadInputs(
    namespace="ns", owner=Owner(c.API_VERSION, c.KIND_IDEP, "detector", "uid-1"), model="yolo",
    model_version="1.2.0", device="edge-1", node="edge-1", artifact=ART, image="img:1",
    runtime=parse(RuntimeSpec, {"threads": 2, "parallelRuns": 2, "maxBatchSize": 8, "maxBatchDelayMs": 5,
                                "maxLatencyMs": 250, "busyPollUs": 0,
                                "maxErrorRate": 0.2, "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                                                   "limits": {"memory": 1073741824}}}),
    fallback=FallbackSpec(url="https://cloud/v2", confidence_threshold=0.6, timeout_ms=1500),
    public_key=SecretRef("keys", "public.pem"),
)


def pod(m: dict[str, Any]) -> dict[str, Any]:
    return m["spec"]  # type: ignore[no-any-return]


def test_pinned_to_its_node_and_tolerates_edge_and_unreachable_forever() -> None:
    m = child_pod(INP)
    terms = pod(m)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-1"]}]}]
    tol = {t["key"]: t for t in pod(m)["tolerations"]}
    for key in ("node-role.kubernetes.io/edge", "node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"):
        assert tol[key]["operator"] == "Exists"
        assert "tolerationSeconds" not in tol[key] and "effect" not in tol[key]
    assert m["kind"] == "Pod" and m["spec"]["restartPolicy"] == "Always"
    assert surges(INP)  # no accelerator unit held: the new Pod comes up beside the old one


def init(p: dict[str, Any], name: str = "fetch") -> dict[str, Any]:
    (ctr,) = [x for x in p["initContainers"] if x["name"] == name]
    return dict(ctr)


def test_init_fetch_and_serve_follow_the_cli_contract() -> None:
    p = pod(child_pod(INP))
    assert [x["name"] for x in p["initContainers"]] == ["cache-dirs", "fetch"]
    fetch = init(p)
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"  # the reason reaches the pod status
    assert fetch["command"] == ["edge-runtime"]
    assert fetch["args"] == ["fetch", ART.uri, "--sha256", H, "--cache", "/var/lib/edgeai/models",
                            "--signature", "c2lnbmF0dXJl", "--public-key-file", "/etc/edgeai/keys/public/public.pem",
                            "--max-size", "1234"]
    (main,) = p["containers"]
    a = main["args"]
    assert a[:7] == ["serve", "--model", f"/var/lib/edgeai/models/sha256/{H}", "--sha256", H, "--name", "yolo"]

    def flag(name: str) -> str:
        return str(a[a.index(name) + 1])

    assert flag("--model-version") == "1.2.0" and flag("--threads") == "2" and flag("--parallel-runs") == "2"
    assert flag("--max-batch-size") == "8" and flag("--max-batch-delay-ms") == "5"
    assert flag("--max-latency-ms") == "250" and flag("--max-error-rate") == "0.2" and flag("--busy-poll-us") == "0"
    assert flag("--fallback-url") == "https://cloud/v2" and flag("--fallback-threshold") == "0.6"
    assert flag("--fallback-timeout-ms") == "1500" and flag("--fallback-queue") == "/var/lib/edgeai/fallback-queue"
    assert flag("--port") == "8080" and flag("--signature") == "c2lnbmF0dXJl"
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert main["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1073741824"}}


def test_every_container_that_can_fail_leaves_its_last_log_lines_as_the_reason() -> None:
    p = pod(child_pod(INP))
    # A server that exits (a model that does not load, no accelerator provider starting under
    # --require-accelerator) or a cache-dirs chown that fails writes no termination message of its own.
    for ctr in (*p["initContainers"], *p["containers"]):
        assert ctr["terminationMessagePolicy"] == "FallbackToLogsOnError", ctr["name"]


def test_cache_is_a_hostpath_shared_by_digest_and_read_only_for_the_server() -> None:
    p = pod(child_pod(INP))
    vols = {v["name"]: v for v in p["volumes"]}
    assert vols["model-cache"]["hostPath"] == {"path": "/var/lib/edgeai/models", "type": "DirectoryOrCreate"}
    main_mounts = {m["name"]: m for m in p["containers"][0]["volumeMounts"]}
    init_mounts = {m["name"]: m for m in init(p)["volumeMounts"]}
    assert main_mounts["model-cache"]["readOnly"] is True
    assert "readOnly" not in init_mounts["model-cache"]
    assert vols["public-key"]["secret"]["items"] == [{"key": "public.pem", "path": "public.pem"}]


def test_non_root_read_only_root_and_no_token() -> None:
    p = pod(child_pod(INP))
    assert p["securityContext"]["runAsNonRoot"] is True and p["automountServiceAccountToken"] is False
    for ctr in [*p["initContainers"], *p["containers"]]:
        sc = ctr["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert ctr["image"] == "img:1"
        if ctr["name"] != "cache-dirs":
            assert sc["capabilities"] == {"drop": ["ALL"]} and "runAsUser" not in sc
    # The one root step: hand the hostPath dirs (created by the kubelet as root) to the runtime's UID,
    # with only the two capabilities that takes, and nothing else mounted.
    dirs = init(p, "cache-dirs")
    assert dirs["securityContext"]["runAsUser"] == 0 and dirs["securityContext"]["runAsNonRoot"] is False
    assert dirs["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert dirs["command"] == ["install", "-d", "-o", "65532", "-g", "65532", "-m", "0750",
                               "/var/lib/edgeai/models", "/var/lib/edgeai/fallback-queue"]
    assert {m["name"] for m in dirs["volumeMounts"]} == {"model-cache", "fallback-queue"}


def test_labels_owner_and_digest_in_template() -> None:
    m = child_pod(INP)
    labels = m["metadata"]["labels"]
    for k in (c.L_NAME, c.L_INSTANCE, c.L_COMPONENT, c.L_PART_OF, c.L_MANAGED_BY, c.L_VERSION):
        assert labels[k]
    assert labels[c.L_MANAGED_BY] == "edgeai-operator"
    assert labels[c.L_IDEP] == "detector" and labels[c.L_DEVICE] == "edge-1"
    (ref,) = m["metadata"]["ownerReferences"]
    assert ref == {"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment", "name": "detector",
                   "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
    assert m["metadata"]["annotations"][c.A_SHA256] == H
    # Named for the device and its template: a second create of the same template is refused, never a twin.
    assert m["metadata"]["name"] == f"detector-edge-1-{m['metadata']['annotations'][c.A_SPEC_HASH][:10]}"


def test_same_inputs_same_hash_changed_model_changes_template_and_hash() -> None:
    a, b = child_pod(INP), child_pod(INP)
    assert a == b
    other = child_pod(replace(INP, artifact=replace(ART, sha256="d" * 64)))
    ha, hb = a["metadata"]["annotations"][c.A_SPEC_HASH], other["metadata"]["annotations"][c.A_SPEC_HASH]
    assert ha != hb
    assert a["metadata"]["name"] != other["metadata"]["name"]
    # The revision number is not part of the template: an undo to an identical template is the same Pod.
    again = child_pod(replace(INP, revision=7))
    assert again["metadata"]["name"] == a["metadata"]["name"]
    assert again["metadata"]["annotations"][c.A_REVISION] == "7"
    assert again["metadata"]["annotations"][c.A_SPEC_HASH] == ha


def test_optional_parts_absent_when_not_asked() -> None:
    plain = replace(INP, fallback=None, public_key=None, runtime=RuntimeSpec(), model_version=None,
                    artifact=replace(ART, signature=None, size=None))
    p = pod(child_pod(plain))
    assert "--fallback-url" not in p["containers"][0]["args"]
    assert "--signature" not in init(p)["args"]
    assert {v["name"] for v in p["volumes"]} == {"model-cache", "tmp"}
    assert p["containers"][0]["resources"] == {}
    enc = child_pod(replace(plain, decryption_key=SecretRef("k", "key")))
    args = pod(enc)["containers"][0]["args"]
    assert args[args.index("--decryption-key-file") + 1] == "/etc/edgeai/keys/decryption/key"


def test_names_and_label_values_stay_valid_when_long() -> None:
    long_dev = "edge-" + "x" * 80 + ".site.example.com"
    name = child_name("detector", long_dev)
    assert len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()
    assert name != child_name("detector", long_dev + "2")
    lv = label_value(long_dev)
    assert len(lv) <= 63 and lv[-1].isalnum()
    assert label_value("edge-1") == "edge-1"


def test_discovered_device_is_owned_by_its_node() -> None:
    d = edge_device_for_node("edge-7", "node-uid")
    (ref,) = d["metadata"]["ownerReferences"]
    assert ref["kind"] == "Node" and ref["uid"] == "node-uid" and ref["blockOwnerDeletion"] is False
    assert d["spec"] == {"nodeName": "edge-7"}
    assert d["metadata"]["labels"][c.L_DISCOVERED] == "true"


def test_grpc_port_is_passed_and_named_only_when_asked() -> None:
    plain = pod(child_pod(replace(INP, runtime=RuntimeSpec())))
    assert "--grpc-port" not in plain["containers"][0]["args"]
    assert [p["name"] for p in plain["containers"][0]["ports"]] == ["http"]
    grpc = pod(child_pod(replace(INP, runtime=RuntimeSpec(grpc_port=9000))))
    (main,) = grpc["containers"]
    assert main["args"][main["args"].index("--grpc-port") + 1] == "9000"
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"http": 8080, "grpc": 9000}


PROFILE = Artifact("quality-profile", "", "https://models.example/quality-profile.json", "d" * 64, size=4096,
                   signature="cHJvZmlsZQ==")


def test_quality_profile_is_fetched_into_the_cache_like_a_build_and_passed_to_the_server() -> None:
    p = pod(child_pod(replace(INP, quality_profile=PROFILE)))
    assert [x["name"] for x in p["initContainers"]] == ["cache-dirs", "fetch", "fetch-profile"]
    fp = init(p, "fetch-profile")
    assert fp["args"] == ["fetch", PROFILE.uri, "--sha256", "d" * 64, "--cache", "/var/lib/edgeai/models",
                          "--signature", "cHJvZmlsZQ==", "--public-key-file", "/etc/edgeai/keys/public/public.pem",
                          "--max-size", "4096"]
    assert fp["volumeMounts"] == init(p)["volumeMounts"]  # the same cache, written the same way
    a = p["containers"][0]["args"]
    assert a[a.index("--quality-profile") + 1] == f"/var/lib/edgeai/models/sha256/{'d' * 64}"
    # format openssf: the model's one bundle must list the profile; unsigned: digest only, size capped at 1 MiB.
    bundled = replace(INP, artifact=replace(ART, signature=None, bundle="{}"),
                      quality_profile=replace(PROFILE, signature=None, bundle="{}", size=None))
    fp = init(pod(child_pod(bundled)), "fetch-profile")
    assert fp["args"][6:] == ["--openssf-bundle", "{}", "--public-key-file", "/etc/edgeai/keys/public/public.pem",
                              "--max-size", str(1 << 20)]
    unsigned = replace(INP, public_key=None, quality_profile=PROFILE)
    assert init(pod(child_pod(unsigned)), "fetch-profile")["args"][6:] == ["--max-size", "4096"]


def test_quality_gate_becomes_runtime_flags_and_nothing_changes_without_it() -> None:
    from edgeai_api.inferencedeployment import QualityGate

    plain = child_pod(INP)
    assert "--quality-gate-min-requests" not in pod(plain)["containers"][0]["args"]
    gate = QualityGate(max_psi=0.25, min_mean_confidence=0.6)
    m = child_pod(replace(INP, quality_profile=PROFILE, quality_gate=gate, quality_window_seconds=30))
    a = pod(m)["containers"][0]["args"]

    def flag(name: str) -> str:
        return str(a[a.index(name) + 1])

    assert flag("--quality-gate-max-psi") == "0.25" and flag("--quality-gate-min-mean-confidence") == "0.6"
    assert flag("--quality-gate-min-requests") == "200"  # the schema's default, applied here
    assert flag("--quality-gate-on-insufficient-traffic") == "wait" and flag("--quality-gate-window-s") == "30"
    assert flag("--quality-gate-state") == "/tmp/edgeai-quality-gate.json"  # in the Pod's emptyDir
    assert {"name": "tmp", "mountPath": "/tmp"} in pod(m)["containers"][0]["volumeMounts"]
    # The verdict's reason reaches Pod status through the termination message file: with
    # FallbackToLogsOnError the file wins whenever the runtime wrote it (the logs only fill in when empty).
    assert pod(m)["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "terminationMessagePath" not in pod(m)["containers"][0]  # the default, /dev/termination-log
    assert m["metadata"]["annotations"][c.A_SPEC_HASH] != plain["metadata"]["annotations"][c.A_SPEC_HASH]


def test_max_psi_previous_keeps_windows_on_the_node_under_the_revisions_template_hash() -> None:
    from edgeai_api.inferencedeployment import QualityGate

    gate = QualityGate(max_psi=0.25)
    before = replace(INP, quality_profile=PROFILE, quality_gate=gate, quality_window_seconds=30)
    # Without maxPSIPrevious the template hash never reaches the Pod: the manifests (and spec hashes) of
    # every existing spec stay byte-equal, so upgrading the operator rolls no device.
    assert child_pod(replace(before, template_hash="0123456789abcdef")) == child_pod(before)
    plain = pod(child_pod(before))
    assert "--quality-window-dir" not in plain["containers"][0]["args"]
    assert all(v["name"] != "quality-windows" for v in plain["volumes"])

    inp = replace(before, quality_gate=QualityGate(max_psi=0.25, max_psi_previous=0.2),
                  template_hash="0123456789abcdef")
    p = pod(child_pod(inp))
    a = p["containers"][0]["args"]
    assert a[a.index("--quality-gate-max-psi-previous") + 1] == "0.2"
    assert a[a.index("--quality-window-dir") + 1] == "/var/lib/edgeai/quality-windows"
    assert a[a.index("--revision") + 1] == "0123456789abcdef"
    vols = {v["name"]: v for v in p["volumes"]}
    # On the node's cache hostPath, one directory per InferenceDeployment: it outlives every Pod of it.
    assert vols["quality-windows"]["hostPath"] == {"path": "/var/lib/edgeai/models/quality-windows/ns/detector",
                                                   "type": "DirectoryOrCreate"}
    assert {"name": "quality-windows", "mountPath": "/var/lib/edgeai/quality-windows"} in p["containers"][0][
        "volumeMounts"]
    assert {"name": "model-cache", "mountPath": c.CACHE_DIR, "readOnly": True} in p["containers"][0]["volumeMounts"]
    # Handed to the runtime's UID like every hostPath the server writes.
    assert "/var/lib/edgeai/quality-windows" in init(p, "cache-dirs")["command"]
    # The same revision on another device: the same --revision (the template's, not the device's).
    other = pod(child_pod(replace(inp, device="edge-2", node="edge-2")))["containers"][0]["args"]
    assert other[other.index("--revision") + 1] == "0123456789abcdef"
    # No profile (refused by the planner anyway): nothing kept, nothing to bin a window on.
    assert "--quality-window-dir" not in pod(child_pod(replace(inp, quality_profile=None)))["containers"][0][
        "args"]


def test_an_oci_build_fetches_with_the_pull_secret_mounted_in_the_init_container_only() -> None:
    art = replace(ART, uri=f"oci://registry.example:5000/models/yolo@sha256:{'d' * 64}", pull_secret="regcred",
                  plain_http=True)
    p = pod(child_pod(replace(INP, artifact=art)))
    args = init(p)["args"]
    assert args[:2] == ["fetch", art.uri]
    assert args[args.index("--registry-auth-file") + 1] == "/etc/edgeai/registry/config.json"
    assert "--plain-http" in args
    vols = {v["name"]: v for v in p["volumes"]}
    assert vols["registry-auth"]["secret"] == {"secretName": "regcred", "defaultMode": 0o440,
                                               "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
    assert {"name": "registry-auth", "mountPath": "/etc/edgeai/registry", "readOnly": True} in init(p)["volumeMounts"]
    # The server never talks to the registry: it gets no credentials.
    assert all(m["name"] != "registry-auth" for m in p["containers"][0]["volumeMounts"])
    # An https build has neither flag nor volume.
    plain = pod(child_pod(INP))
    assert "--registry-auth-file" not in init(plain)["args"] and "--plain-http" not in init(plain)["args"]
    assert all(v["name"] != "registry-auth" for v in plain["volumes"])
